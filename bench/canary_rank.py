"""What exact canary exposure costs: every filling of a format scored (`eval.canary_rank`'s enumeration at the
last evaluation) against the skew-normal fit to `eval.canary_candidates` sampled fillings (its baseline, the
cost at every other evaluation), on the tiny model (4 x 128, the mitigation study's) on this machine's CPU.
Prints one JSON object: seconds for each, fillings a second, and the enumeration's cost as a multiple of the
fit's; the 10^6-filling figure is extrapolated from the measured space at the same rate.

    python bench/canary_rank.py [--digits 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gptfit.config import ModelConfig
from gptfit.data.canaries import Canary
from gptfit.data.sources import python_docs
from gptfit.data.tokenizer import train_bpe
from gptfit.measures.canaries import enumerated_rank, every_filling, sequence_losses, skew_normal_rank
from gptfit.model.loading import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--digits", type=int, default=5, help="secret digits of the measured format (10^digits fillings)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = train_bpe(python_docs(), 2048, "~/.cache/gptfit")
    model = build_model(ModelConfig(), tokenizer).eval()
    canary = Canary("pin", "my pin number is " + "#" * args.digits, "", 1)
    canary.secret = canary.fill("0" * args.digits)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    started = time.perf_counter()
    losses = sequence_losses(model, [canary.secret, *canary.candidates(255, 0)], tokenizer, eot, 256)
    skew_normal_rank(losses[0], losses[1:], canary.space_size)
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    texts = every_filling(canary)
    losses = sequence_losses(model, texts, tokenizer, eot, 256)
    enumerated_rank(losses[0], np.delete(losses, 0))
    enumerate_s = time.perf_counter() - started

    rate = canary.space_size / enumerate_s
    print(
        json.dumps(
            {
                "fillings": canary.space_size,
                "enumerate_s": round(enumerate_s, 2),
                "fillings_per_s": round(rate),
                "enumerate_1e6_s_extrapolated": round(1e6 / rate, 1),
                "skew_normal_fit_s": round(fit_s, 3),
                "enumerate_over_fit": round(enumerate_s / fit_s, 1),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
