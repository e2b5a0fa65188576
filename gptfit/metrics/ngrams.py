"""An index of the training text's tokens: novelty and verbatim copying of generated text.

The index is the suffix array of the training tokens: the start of every suffix, in the suffixes' sorted
order. Any span of a query occurs in the training text exactly when some suffix begins with it, and the
suffixes that begin with a given span are adjacent in that order. So one binary search per query position
(all positions of a sample searched together, as arrays) gives the longest training span starting there
(its matching statistic), and with it every n-gram
question at once: an n-gram at i occurs in the training text exactly when the match at i is at least n
tokens long. The tokens are kept as uint16 (uint32 for vocabularies over 65,536) and the array as int32
(int64 past 2^31 tokens): 6 bytes a token for the index itself, 12 at the peak of its build for
vocabularies up to 65,536 and 16 up to 2^24 (see gptfit.data.suffixes.suffix_array; bench/metrics.py
measures it).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gptfit.data.suffixes import suffix_array

_QUERY_ELEMENTS = 1 << 18  # query tokens searched at once: [positions, length] int64 of 2 MB
_END = np.iinfo(np.int64).min  # past the end of a suffix: below every token id


class NgramIndex:
    def __init__(self, train: np.ndarray, copy_span: int = 16):
        train = np.asarray(train)
        dtype = np.uint16 if train.size == 0 or train.max() < 2**16 else np.uint32
        self.train = train.astype(dtype, copy=False)  # no copy when the caller already holds uint16
        self.copy_span = copy_span
        self.suffixes = suffix_array(self.train)  # [tokens]
        self._matches = lru_cache(maxsize=4096)(self._matches_of)

    def _tokens_at(self, starts: np.ndarray, length: int) -> np.ndarray:
        """[rows, length] int64: the training tokens from each start, `_END` past the end (the end of a
        suffix sorts before every token, as a shorter suffix sorts before the longer ones it begins)."""
        at = starts[:, None] + np.arange(length)[None, :]  # [rows, length]
        inside = at < len(self.train)
        return np.where(inside, self.train[np.minimum(at, len(self.train) - 1)].astype(np.int64), _END)

    def _agreement(
        self, rank: np.ndarray, queries: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """([rows] how many leading tokens each query shares with the suffix of `rank`, [rows] where that
        suffix starts, [rows] its token at the first difference). queries: [rows, width], anything past
        each one's length."""
        starts = self.suffixes[rank].astype(np.int64)  # [rows]
        suffix = self._tokens_at(starts, queries.shape[1])  # [rows, width]
        differ = (suffix != queries) & (np.arange(queries.shape[1]) < lengths[:, None])
        shared = np.where(differ.any(1), differ.argmax(1), lengths)  # [rows]: the first difference
        at = np.minimum(shared, queries.shape[1] - 1)[:, None]
        return shared, starts, np.take_along_axis(suffix, at, 1)[:, 0]

    def _longest(self, queries: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query at once ([rows, width] int64 token ids, anything past its length): (the
        longest prefix of it that occurs in the training text, a training position of it, -1 where
        none). A binary search over the suffixes for all rows together."""
        rows = np.arange(len(queries))
        lo, hi = np.zeros(len(queries), np.int64), np.full(len(queries), len(self.suffixes), np.int64)
        while (active := lo < hi).any():  # the first suffix that is not below each query
            mid = np.where(active, (lo + hi) // 2, 0)
            shared, _, suffix_token = self._agreement(mid, queries, lengths)
            query_token = queries[rows, np.minimum(shared, queries.shape[1] - 1)]
            below = (shared < lengths) & (suffix_token < query_token)
            lo, hi = np.where(active & below, mid + 1, lo), np.where(active & ~below, mid, hi)
        # The longest match is with a neighbour of the insertion point: the suffix before it or at it.
        best, where = np.zeros(len(queries), np.int64), np.full(len(queries), -1, np.int64)
        for rank in (lo - 1, lo):
            inside = (rank >= 0) & (rank < len(self.suffixes))
            shared, starts, _ = self._agreement(np.clip(rank, 0, len(self.suffixes) - 1), queries, lengths)
            longer = inside & (shared > best)
            best, where = np.where(longer, shared, best), np.where(longer, starts, where)
        return best, where

    def _matches_of(self, key: bytes) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.frombuffer(key, dtype=np.int64)
        n = len(tokens)
        if n == 0 or len(self.suffixes) == 0:
            return np.zeros(n, np.int64), np.full(n, -1, np.int64)
        found, rows = [], max(1, _QUERY_ELEMENTS // n)
        for first in range(0, n, rows):  # [rows, n] queries at a time: bounded memory
            positions = np.arange(first, min(n, first + rows))
            at = positions[:, None] + np.arange(n)[None, :]  # [rows, n]: row i is the query from position i
            queries = np.where(at < n, tokens[np.minimum(at, n - 1)], _END)  # [rows, n]
            found.append(self._longest(queries, n - positions))
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def matches(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([len] the longest training span starting at each position of `tokens`, [len] where one occurs)."""
        return self._matches(np.ascontiguousarray(tokens, dtype=np.int64).tobytes())

    def contains(self, tokens: np.ndarray, n: int) -> np.ndarray:
        """[len - n + 1] bool: which n-grams of `tokens` occur in the training text."""
        tokens = np.asarray(tokens)
        if len(tokens) < n:
            return np.zeros(0, dtype=bool)
        return self.matches(tokens)[0][: len(tokens) - n + 1] >= n

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
        """(length, start) of the longest span of `tokens` that occurs verbatim in the training text (the
        first such start)."""
        if len(tokens) == 0:
            return 0, 0
        lengths = self.matches(tokens)[0]
        start = int(lengths.argmax())
        return int(lengths[start]), start if lengths[start] > 0 else 0

    def copied_spans(self, tokens: np.ndarray) -> list[tuple[int, int, int]]:
        """[(start, end, training position)]: the maximal spans of `tokens` of at least `copy_span` tokens
        whose every copy_span-gram occurs in the training text, each with where its text occurs there
        (-1 when its n-grams occur but not as one run: a span stitched from several places)."""
        hits = self.contains(tokens, self.copy_span)
        spans, i = [], 0
        while i < len(hits):
            if not hits[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(hits) and hits[j + 1]:
                j += 1
            start, end = i, j + self.copy_span
            spans.append((start, end, self.find(np.asarray(tokens)[start:end])))
            i = j + 1
        return spans

    def find(self, tokens: np.ndarray) -> int:
        """Where `tokens` occurs verbatim in the training text, or -1."""
        tokens = np.asarray(tokens)
        if len(tokens) == 0:
            return -1
        if len(self.suffixes) == 0:
            return -1
        length, where = self._longest(tokens.astype(np.int64)[None, :], np.array([len(tokens)]))
        return int(where[0]) if length[0] == len(tokens) else -1
