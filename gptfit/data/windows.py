"""Windows of `model.block_size` tokens cut from a token stream.

Training draws windows at random offsets; sample i's offset depends only on (seed, i), so the order
is reproducible and a resumed run sees the same windows as an uninterrupted one. Evaluation uses
fixed windows spread evenly over a stream, the same at every evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class RandomWindows(Dataset):
    """`num_samples` windows at offsets drawn from (seed, index)."""

    def __init__(self, stream: np.ndarray, block_size: int, num_samples: int, seed: int):
        self.stream = torch.from_numpy(np.asarray(stream, dtype=np.int64))
        self.block_size, self.num_samples, self.seed = block_size, num_samples, seed
        self.max_offset = len(stream) - block_size  # inclusive

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        offset = int(np.random.default_rng((self.seed, i)).integers(0, self.max_offset + 1))
        window = self.stream[offset : offset + self.block_size]  # [block_size]
        return {"input_ids": window, "labels": window}


def fixed_windows(stream: np.ndarray, block_size: int, count: int) -> torch.Tensor:
    """[n, block_size]: up to `count` windows at evenly spaced offsets covering the stream."""
    max_offset = len(stream) - block_size
    if max_offset < 0:
        raise ValueError(f"stream of {len(stream)} tokens is shorter than one window of {block_size}")
    offsets = np.unique(np.linspace(0, max_offset, num=count).round().astype(np.int64))
    index = offsets[:, None] + np.arange(block_size)[None, :]
    return torch.from_numpy(np.asarray(stream, dtype=np.int64)[index])
