"""Exposure arithmetic on the starts of training windows: how many windows held each token, and each
sequence whole (the ledger that counts the starts is gptfit.run.exposure)."""

from __future__ import annotations

import numpy as np


def token_counts(starts: np.ndarray, block_size: int) -> np.ndarray:
    """[tokens] how many windows held each token: the windows starting in (t - block, t]."""
    cumulative = np.concatenate([[0], np.cumsum(starts)])  # [tokens + 1]
    t = np.arange(len(starts))
    return cumulative[t + 1] - cumulative[np.maximum(t + 1 - block_size, 0)]


def sequence_exposures(
    starts: np.ndarray, last_seen: np.ndarray, offsets: np.ndarray, length: int, block_size: int
) -> dict[str, np.ndarray]:
    """Per sequence [offset, offset + length): exposures, token_exposures, last_seen_step."""
    cumulative = np.concatenate([[0], np.cumsum(starts)])
    lo = np.maximum(offsets + length - block_size, 0)
    whole = cumulative[offsets + 1] - cumulative[lo]  # windows starting in [offset + length - block, offset]
    counts = token_counts(starts, block_size)
    index = offsets[:, None] + np.arange(length)[None, :]  # [sequences, length]
    return {"exposures": whole, "token_exposures": counts[index].mean(1), "last_seen_step": last_seen[index].max(1)}
