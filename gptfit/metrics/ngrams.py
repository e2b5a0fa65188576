"""An index of the training text's token n-grams: novelty and verbatim copying of generated text.

Each n-gram is reduced to a 64-bit polynomial hash (collisions are about 1 in 2^64 per pair, far
below anything a metric could show). For n = 1..max_n and for the copy span, the sorted unique
hashes of every training n-gram are kept, so a lookup is one `np.searchsorted`. Built once per run.

The longest verbatim overlap is exact: spans up to max_n tokens are found through the hash sets, and
longer ones are grown from the training positions of their first max_n-gram (at most
`max_candidates` positions per start are followed, which only matters for n-grams repeated hundreds
of times).
"""

from __future__ import annotations

import numpy as np

_BASE = np.uint64(1_000_003)


def rolling_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """[len - n + 1] uint64 hashes of every n-gram of `tokens`."""
    t = np.asarray(tokens, dtype=np.uint64) + np.uint64(1)  # so that token 0 still changes the hash
    if len(t) < n:
        return np.zeros(0, dtype=np.uint64)
    h = t[: len(t) - n + 1].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            h = h * _BASE + t[j : len(t) - n + 1 + j]
    return h


def _member(sorted_hashes: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if len(sorted_hashes) == 0 or len(queries) == 0:
        return np.zeros(len(queries), dtype=bool)
    pos = np.searchsorted(sorted_hashes, queries)
    pos = np.minimum(pos, len(sorted_hashes) - 1)
    return sorted_hashes[pos] == queries


class NgramIndex:
    def __init__(self, train: np.ndarray, max_n: int = 8, copy_span: int = 16, max_candidates: int = 64):
        self.train = np.asarray(train, dtype=np.int64)
        self.max_n, self.copy_span, self.max_candidates = max_n, copy_span, max_candidates
        self.sets = {n: np.unique(rolling_hashes(self.train, n)) for n in {*range(1, max_n + 1), copy_span}}
        # Where each max_n-gram starts in the training text, to grow longer copies from.
        top = rolling_hashes(self.train, max_n)
        self._top_order = np.argsort(top, kind="stable")
        self._top_sorted = top[self._top_order]

    def contains(self, tokens: np.ndarray, n: int) -> np.ndarray:
        """[len - n + 1] bool: which n-grams of `tokens` occur in the training text."""
        if n not in self.sets:
            self.sets[n] = np.unique(rolling_hashes(self.train, n))
        return _member(self.sets[n], rolling_hashes(tokens, n))

    def novelty(self, samples: list[np.ndarray], n: int) -> float | None:
        """Share of the samples' n-grams absent from the training text (None when no sample has one)."""
        found = [self.contains(s, n) for s in samples if len(s) >= n]
        total = sum(len(f) for f in found)
        if total == 0:
            return None
        return 1.0 - sum(int(f.sum()) for f in found) / total

    def has_copy(self, tokens: np.ndarray, span: int | None = None) -> bool:
        """Whether `tokens` contains a verbatim training span of at least `span` tokens."""
        return bool(self.contains(tokens, span or self.copy_span).any())

    def longest_copy(self, tokens: np.ndarray) -> tuple[int, int]:
        """(length, start) of the longest span of `tokens` that occurs verbatim in the training text."""
        tokens = np.asarray(tokens, dtype=np.int64)
        best, best_start = 0, 0
        for n in range(1, self.max_n + 1):
            hits = np.flatnonzero(self.contains(tokens, n))
            if len(hits) == 0:
                return best, best_start
            best, best_start = n, int(hits[0])
        # Spans longer than max_n: grow from every training occurrence of each max_n-gram.
        hashes = rolling_hashes(tokens, self.max_n)
        for start in np.flatnonzero(_member(self.sets[self.max_n], hashes)):
            lo = np.searchsorted(self._top_sorted, hashes[start], side="left")
            hi = min(np.searchsorted(self._top_sorted, hashes[start], side="right"), lo + self.max_candidates)
            for pos in self._top_order[lo:hi]:
                length = _common_prefix(tokens[start:], self.train[pos:])
                if length > best:
                    best, best_start = length, int(start)
        return best, best_start


    def copied_spans(self, tokens: np.ndarray) -> list[tuple[int, int, int]]:
        """[(start, end, training position)]: the maximal spans of `tokens` of at least `copy_span` tokens
        whose every copy_span-gram occurs in the training text, each with where its text occurs there
        (-1 when its n-grams occur but not as one run: a span stitched from several places)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        hits = self.contains(tokens, self.copy_span) if len(tokens) >= self.copy_span else np.zeros(0, bool)
        spans, i = [], 0
        while i < len(hits):
            if not hits[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(hits) and hits[j + 1]:
                j += 1
            start, end = i, j + self.copy_span
            spans.append((start, end, self.find(tokens[start:end])))
            i = j + 1
        return spans

    def find(self, tokens: np.ndarray) -> int:
        """Where `tokens` (at least max_n of them) occurs verbatim in the training text, or -1."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens) < self.max_n:
            return -1
        first = rolling_hashes(tokens[: self.max_n], self.max_n)[0]
        lo = np.searchsorted(self._top_sorted, first, side="left")
        hi = min(np.searchsorted(self._top_sorted, first, side="right"), lo + self.max_candidates)
        for pos in self._top_order[lo:hi]:
            if _common_prefix(tokens, self.train[pos:]) == len(tokens):
                return int(pos)
        return -1


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m
