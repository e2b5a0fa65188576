"""Suffix arrays of token streams: every suffix's start, in the suffixes' sorted order, and the tokens that
neighbours in that order share. Suffixes that begin with the same span are adjacent in the order, which is
what both the training-text index (gptfit.metrics.ngrams) and deduplication (gptfit.data.dedup) stand on.
"""

from __future__ import annotations

import numpy as np
from pydivsufsort import divsufsort, kasai

_CHUNK = 1 << 18  # positions a step while encoding and compacting: temporaries of a few MB


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """[tokens] int32 (int64 past 2^31 tokens): the starts of the suffixes of `tokens`, in sorted order.

    libdivsufsort (through pydivsufsort, its maintained binding) sorts bytes, so each token becomes its
    `width` big-endian bytes: codes of one width compare as the tokens do, so the byte suffixes that start
    on a token boundary come out in the order of the token suffixes. The rest are dropped a chunk at a
    time. The peak is the codes and the byte suffixes while sorting (5 * width bytes a token, int32), then
    the byte suffixes and the answer (4 * width + 4): 12 bytes a token for width 2, 16 for width 3.
    pydivsufsort's own handling of wider dtypes holds about 20 (its whole mask and quotient at once).
    """
    n = len(tokens)
    if n == 0:
        return np.zeros(0, np.int32)
    width = max(1, (int(tokens.max()).bit_length() + 7) // 8)
    codes = np.empty((n, width), np.uint8)  # [tokens, width]: big-endian bytes of each token
    for first in range(0, n, _CHUNK):
        part = tokens[first : first + _CHUNK].astype(np.uint32)  # [chunk]
        for byte in range(width):
            codes[first : first + _CHUNK, byte] = (part >> (8 * (width - 1 - byte))) & 0xFF
    byte_suffixes = divsufsort(codes.reshape(-1))  # [tokens * width]
    del codes
    out = np.empty(n, np.int32 if n < 2**31 else np.int64)  # [tokens]
    kept = 0
    for first in range(0, len(byte_suffixes), _CHUNK):
        chunk = byte_suffixes[first : first + _CHUNK]  # [chunk] byte positions, in sorted order
        starts = chunk[chunk % width == 0] // width  # [kept] token positions, in the same order
        out[kept : kept + len(starts)] = starts
        kept += len(starts)
    assert kept == n, (kept, n)
    return out


def shared_prefixes(tokens: np.ndarray, order: np.ndarray) -> np.ndarray:
    """[tokens] how many leading tokens the suffix at rank r shares with the one at rank r + 1 (0 at the
    last rank): the LCP array, by Kasai et al.'s linear-time algorithm (pydivsufsort's, in Cython)."""
    if len(tokens) == 0:
        return np.zeros(0, np.int64)
    return kasai(tokens, order)
