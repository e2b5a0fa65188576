"""Cost of the training-text index (the suffix array of gptfit.metrics.ngrams) at 1e6, 1e7 and 1e8 tokens.

The text is real: the embedded corpus tokenized by its BPE (vocabulary 2048), about 130k tokens.
Larger sizes repeat it with seeded edits (1% of the tokens of each copy replaced at random), so the
index sees the repetition of real text without holding 100 M tokens of it. Each size is built in a
subprocess of its own, so that its peak resident memory is its own: `bytes_per_token` is that peak's
growth over the process before the build (the tokens already in memory) divided by the tokens.
`lookup_s` is one evaluation's lookups: novelty for n = 1..8, the longest copy and the copy flag of 63
samples of 32 tokens, half of them copies of training spans.

    python bench/metrics.py [--sizes 1e6 1e7 1e8]
Prints one JSON object with `sizes`: [{tokens, build_s, peak_mb, bytes_per_token, lookup_s}, ...].
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def real_tokens() -> np.ndarray:
    from gptfit.config import Config
    from gptfit.data.corpus import load_corpus

    cfg = Config(run_dir="unused")
    cfg.data.train_tokens = load_corpus(cfg.data).pool_tokens  # the whole training pool
    corpus = load_corpus(cfg.data)
    return np.concatenate([corpus.train, corpus.val]).astype(np.uint16)


def synthetic(base: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """`size` tokens: copies of `base`, each with 1% of its tokens replaced by seeded random ones."""
    rng = np.random.default_rng(seed)
    out = np.resize(base, size)  # [size] uint16: base repeated
    edits = rng.integers(0, size, size // 100)
    out[edits] = rng.integers(0, int(base.max()) + 1, len(edits), dtype=np.uint16)
    return out


def one_size(size: int) -> dict:
    from gptfit.metrics.ngrams import NgramIndex

    tokens = synthetic(real_tokens(), size)
    reset_peak()
    before = status_mb("VmRSS")
    started = time.perf_counter()
    index = NgramIndex(tokens, copy_span=16)
    build_s = time.perf_counter() - started
    peak = status_mb("VmHWM")
    rng = np.random.default_rng(1)
    samples = [
        tokens[s : s + 32].astype(np.int64) if i % 2 else rng.integers(0, 2048, 32)
        for i, s in enumerate(rng.integers(0, size - 32, 63))
    ]
    started = time.perf_counter()
    for n in range(1, 9):
        index.novelty(samples, n)
    copies = [index.longest_copy(s) for s in samples]
    flags = [index.has_copy(s) for s in samples]
    lookup_s = time.perf_counter() - started
    growth = peak - before
    return {
        "tokens": size,
        "build_s": round(build_s, 2),
        "peak_mb": round(growth, 1),
        "bytes_per_token": round(growth * 2**20 / size, 2),
        "lookup_s": round(lookup_s, 3),
        "check": {"copied": int(sum(flags)), "longest_copy_max": max(c[0] for c in copies)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)  # a child: one size
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(int(args.one))))
        return
    sizes = []
    for size in args.sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True
        )
        sizes.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "metrics_suffix_array", "sizes": sizes}, indent=2))


if __name__ == "__main__":
    main()
