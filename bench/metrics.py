"""Cost of the training-text n-gram index on a corpus of about a million tokens.

Tokenizes a text file (default: ../shared/corpora/tinyshakespeare.txt, read where it lies) with a
byte-level BPE, then times building the index (n = 1..8 and the copy span) and looking up a batch of
samples the size of one evaluation's (7 settings x 9 prompts x 32 tokens, half of them copies of
training spans): novelty for n = 1..8, the longest copy and the copy flag of each. Memory is the
peak traced by tracemalloc during the build (numpy reports its buffers there) and the growth of the
process's resident set.

    python bench/metrics.py [--text PATH] [--vocab 258]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from gptfit.data.tokenizer import train_bpe
from gptfit.metrics.ngrams import NgramIndex

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default=str(DEFAULT_TEXT))
    ap.add_argument("--vocab", type=int, default=258)  # byte level plus one merge: ~1.1 M tokens of Shakespeare
    ap.add_argument("--cache-dir", default="~/.cache/gptfit")
    args = ap.parse_args()

    text = Path(args.text).read_text()
    docs = [p for p in text.split("\n\n") if p.strip()]
    tokenizer = train_bpe(docs, args.vocab, args.cache_dir)
    tokens = np.array(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    rss_before = rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    index = NgramIndex(tokens, max_n=8, copy_span=16)
    build_s = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_mb()

    rng = np.random.default_rng(0)
    samples = []
    for i in range(63):
        if i % 2:
            start_at = int(rng.integers(0, len(tokens) - 32))
            samples.append(tokens[start_at : start_at + 32])
        else:
            samples.append(rng.integers(0, args.vocab, 32))
    start = time.perf_counter()
    novelty = {n: index.novelty(samples, n) for n in range(1, 9)}
    copies = [index.longest_copy(s) for s in samples]
    flags = [index.has_copy(s) for s in samples]
    lookup_s = time.perf_counter() - start

    print(json.dumps({
        "benchmark": "metrics_ngram_index",
        "text": Path(args.text).name,
        "tokens": int(len(tokens)),
        "build_s": round(build_s, 3),
        "build_traced_peak_mb": round(traced_peak / 2**20, 1),
        "build_rss_growth_mb": round(rss_after - rss_before, 1),
        "lookup_samples": len(samples),
        "lookup_s": round(lookup_s, 4),
        "total_s": round(build_s + lookup_s, 3),
        "check": {"copied_samples_found": int(sum(flags)), "novel_8gram": round(novelty[8], 3),
                  "longest_copy_max": max(c[0] for c in copies)},
    }, indent=2))


if __name__ == "__main__":
    main()
