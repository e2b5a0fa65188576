"""Decoding speed: gptfit's cached loop against transformers' `generate`, and against no cache at all.

The `tiny` shape (4 layers, 4 heads, 128 wide, vocabulary 2048) with a context of 256 decodes exactly
200 new tokens from a 1-token prompt (end-of-text suppressed on every side with min_new_tokens=200), at
batch 1 and batch 16, greedy and 3-beam search. Contestants:
  gptfit        gptfit's GPT through gptfit.core.sampling.generate (preallocated KVCache, its own loop)
  gptfit_nocache  the same loop without the cache (every step runs the whole sequence)
  hf_generate   the same gptfit GPT through transformers' `model.generate` (the loop alone differs)
  gpt2_generate transformers' GPT2LMHeadModel of the same shape and vocabulary through `generate`
They are interleaved in one process: every round runs one call of each, in a rotating order; the
medians over the rounds are compared. All produce the same tokens for greedy and for beam search
(checked before timing). Without the cache, beam search at batch 16 (48 rows) is left out: too slow.

Prints one JSON object: tokens/s of each (new tokens x prompts / s) and the ratios
  (a) gptfit vs gpt2_generate  (targets: >= 3x greedy at batch 1, > 1x for 3-beam search)
  (b) gptfit vs hf_generate    (the loop alone; target >= 1.2x)
  (c) gptfit vs gptfit_nocache

    python bench/decode.py [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from gptfit.core.sampling.decode import generate
from gptfit.model import GPTConfig, GPTForCausalLM

VOCAB, N_LAYER, N_HEAD, N_EMBD, CONTEXT, NEW = 2048, 4, 4, 128, 256, 200
EOS = 0


def models():
    torch.manual_seed(0)
    ours = GPTForCausalLM(
        GPTConfig(
            vocab_size=VOCAB,
            n_layer=N_LAYER,
            n_head=N_HEAD,
            n_embd=N_EMBD,
            block_size=CONTEXT,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    ).eval()
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_layer=N_LAYER,
            n_head=N_HEAD,
            n_embd=N_EMBD,
            n_positions=CONTEXT,
            bos_token_id=EOS,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    ).eval()
    return ours, gpt2


def contestants(ours, gpt2, beams: int, batch: int):
    setting = dict(max_new_tokens=NEW, num_beams=beams)
    hf = dict(
        max_new_tokens=NEW, min_new_tokens=NEW, num_beams=beams, do_sample=False, eos_token_id=EOS, pad_token_id=EOS
    )
    runs = {
        "gptfit": lambda ids: generate(ours, ids, setting, eos_token_id=EOS, min_new_tokens=NEW).sequences,
        "hf_generate": lambda ids: ours.generate(ids, attention_mask=torch.ones_like(ids), **hf),
        "gpt2_generate": lambda ids: gpt2.generate(ids, attention_mask=torch.ones_like(ids), **hf),
    }
    if beams * batch <= 16:  # without a cache, 48 rows x 200 steps of up to 200 tokens take minutes
        runs["gptfit_nocache"] = lambda ids: (
            generate(ours, ids, setting, eos_token_id=EOS, min_new_tokens=NEW, use_cache=False).sequences
        )
    return runs


def timed(fn, ids) -> float:
    start = time.perf_counter()
    out = fn(ids)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == 1 + NEW, out.shape
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    ours, gpt2 = models()

    result = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "new_tokens": NEW,
        "context": CONTEXT,
        "rounds": args.rounds,
        "tokens_per_s": {},
        "ratios": {},
    }
    for beams in (1, 3):
        for batch in (1, 16):
            key = f"{'greedy' if beams == 1 else f'beam{beams}'}_batch{batch}"
            ids = torch.randint(1, VOCAB, (batch, 1), generator=torch.Generator().manual_seed(batch))
            runs = contestants(ours, gpt2, beams, batch)
            # The same tokens from gptfit's loop, without the cache, and from generate on the same model.
            ref = runs["hf_generate"](ids)
            for name in ("gptfit", "gptfit_nocache"):
                assert name not in runs or torch.equal(runs[name](ids), ref), (key, name)
            times = {name: [] for name in runs}
            names = list(runs)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                    times[name].append(timed(runs[name], ids))
            tps = {name: batch * NEW / statistics.median(t) for name, t in times.items()}
            result["tokens_per_s"][key] = {k: round(v, 1) for k, v in tps.items()}
            ratios = {
                "a_vs_gpt2_generate": tps["gptfit"] / tps["gpt2_generate"],
                "b_vs_generate_same_model": tps["gptfit"] / tps["hf_generate"],
            }
            if "gptfit_nocache" in tps:
                ratios["c_vs_no_cache"] = tps["gptfit"] / tps["gptfit_nocache"]
            result["ratios"][key] = {k: round(v, 2) for k, v in ratios.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
