"""Windows of `model.block_size` tokens cut from a token stream.

Training takes sample i at `offset(i)`, a function of (seed, i) alone, so the order is reproducible and
a resumed run sees the same windows as an uninterrupted one:
- `RandomWindows` (train.sampling=random): offsets drawn at random, with replacement;
- `EpochWindows` (train.sampling=epochs): the stream cut into non-overlapping windows, shuffled anew each
  epoch without replacement, so every window is seen exactly once per epoch.
With goldfish loss (`Windows.drop`), the labels hold IGNORE_INDEX at the dropped stream positions.
Evaluation uses fixed windows spread evenly over a stream, the same at every evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from gptfit.core.lm_loss import IGNORE_INDEX


def document_index(stream: np.ndarray, eot_id: int) -> np.ndarray:
    """[tokens + 1]: how many documents (each ended by end-of-text) end before position t: t's document."""
    return np.concatenate([[0], np.cumsum(stream == eot_id)])


class Windows(Dataset):
    """`num_samples` training windows; subclasses say where sample i starts."""

    def __init__(self, stream: np.ndarray, block_size: int, num_samples: int, seed: int):
        self.stream = torch.from_numpy(np.asarray(stream, dtype=np.int64))
        self.block_size, self.num_samples, self.seed = block_size, num_samples, seed
        self.avoided: tuple[int, int, np.ndarray] | None = None  # (after sample, from step, cumulative mask)
        self.dropped: torch.Tensor | None = None  # [tokens] bool: targets left out of the loss (goldfish)

    def drop(self, mask: np.ndarray) -> None:
        """Leave the tokens marked in `mask` ([tokens] bool, over the whole stream) out of every window's
        loss: their labels become IGNORE_INDEX; the model still reads them (train.goldfish)."""
        if len(mask) != len(self.stream):
            raise ValueError(f"a mask of {len(mask)} tokens for a stream of {len(self.stream)}")
        self.dropped = torch.from_numpy(np.asarray(mask, dtype=bool))

    def avoid(self, mask: np.ndarray, after_step: int, batch_size: int) -> None:
        """From the step after `after_step` on, no window holds a token marked in `mask` ([tokens] bool):
        the text under it is gone from the training set (data.forget)."""
        self.avoided = (after_step * batch_size, after_step, np.concatenate([[0], np.cumsum(mask)]))

    def touches_avoided(self, i: int, offset: int) -> bool:
        if self.avoided is None or i < self.avoided[0]:
            return False
        cumulative = self.avoided[2]
        return bool(cumulative[offset + self.block_size] - cumulative[offset] > 0)

    def offset(self, i: int) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        offset = self.offset(i)
        window = self.stream[offset : offset + self.block_size]  # [block_size]
        labels = window
        if self.dropped is not None:
            labels = window.masked_fill(self.dropped[offset : offset + self.block_size], IGNORE_INDEX)  # [block_size]
        return {"input_ids": window, "labels": labels}


class RandomWindows(Windows):
    """Offsets drawn from (seed, index): any window may come twice, or never."""

    def offset(self, i: int) -> int:
        rng = np.random.default_rng((self.seed, i))
        offset = int(rng.integers(0, len(self.stream) - self.block_size + 1))
        while self.touches_avoided(i, offset):  # drawn again from the same generator: still a function of (seed, i)
            offset = int(rng.integers(0, len(self.stream) - self.block_size + 1))
        return offset


class EpochWindows(Windows):
    """The windows at offsets 0, block, 2 block, ... in an order drawn from (seed, epoch) each epoch."""

    def __init__(self, stream: np.ndarray, block_size: int, num_samples: int, seed: int):
        super().__init__(stream, block_size, num_samples, seed)
        self.per_epoch = len(self.stream) // block_size
        if self.per_epoch == 0:
            raise ValueError(f"stream of {len(self.stream)} tokens is shorter than one window of {block_size}")
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation), the last one drawn

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng((self.seed, epoch)).permutation(self.per_epoch))
        return self._order[1]

    def offset(self, i: int) -> int:
        epoch, k = divmod(i, self.per_epoch)
        return int(self.order(epoch)[k]) * self.block_size


def fixed_windows(stream: np.ndarray, block_size: int, count: int, stride: int = 1) -> torch.Tensor:
    """[n, block_size]: up to `count` windows at evenly spaced offsets covering the stream, each offset a
    multiple of `stride` (data=uniform's sequence period, so a window is a sequence as training saw it)."""
    max_offset = len(stream) - block_size
    if max_offset < 0:
        raise ValueError(f"stream of {len(stream)} tokens is shorter than one window of {block_size}")
    starts = np.linspace(0, max_offset // stride, num=count).round().astype(np.int64)
    offsets = np.unique(starts) * stride
    index = offsets[:, None] + np.arange(block_size)[None, :]
    return torch.from_numpy(np.asarray(stream, dtype=np.int64)[index])
