"""Memory of a training step: the fused output layer + loss (core.lm_loss) vs. logits + F.cross_entropy.

gptfit's `small` shape (6 layers, 6 heads, width 384, context 256) at batch 32, for two vocabulary sizes.
Each measurement runs in a fresh process, which does one forward and backward; the figure is how far the
process's peak resident memory rose during that step. Prints one JSON object.

    python bench/lm_loss_memory.py [--batch 32] [--vocab 16384 50257]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_step(fused: bool, vocab: int, batch: int, block: int) -> dict:
    import torch

    from gptfit.model import GPTConfig, GPTForCausalLM

    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=vocab, n_layer=6, n_head=6, n_embd=384, block_size=block)).train()
    ids = torch.randint(0, vocab, (batch, block))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model(input_ids=ids, labels=ids, return_logits=not fused).loss.backward()
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    return {"peak_growth_mb": round(grown / 1024), "step_s": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--vocab", type=int, nargs="+", default=[16384, 50257])
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "VOCAB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, vocab = args.child
        print(json.dumps(one_step(variant == "fused", int(vocab), args.batch, args.block)))
        return
    rows = {}
    for vocab in args.vocab:
        for variant in ("fused", "logits"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--batch",
                    str(args.batch),
                    "--block",
                    str(args.block),
                    "--child",
                    variant,
                    str(vocab),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows[f"{variant}_vocab_{vocab}"] = json.loads(out.strip().splitlines()[-1])
    result = {
        "benchmark": "lm_loss_memory",
        "shape": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": args.block, "batch": args.batch},
        "steps": rows,
        "memory_ratio_logits_vs_fused": {
            str(v): round(
                rows[f"logits_vocab_{v}"]["peak_growth_mb"] / max(1, rows[f"fused_vocab_{v}"]["peak_growth_mb"]), 2
            )
            for v in args.vocab
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
