"""The exposure ledger: which training windows a run has shown its model, and when.

For every token position of the training set it keeps how many training windows started there
(`starts`) and the last optimizer step whose batch held the position (`last_seen`, -1: never). From
`starts` follow the two exposure figures of a sequence [a, a + L):
- `exposures`: the windows that held it whole, those starting in [a + L - block, a];
- `token_exposures`: the mean over its tokens of the windows that held each token.
Under random offsets a whole sequence is rarely inside one window, so the second is the one that
varies there; under epoch sampling with windows of L tokens, the first is exact.

Windows are counted as the data loader fetches them (`CountedWindows`), each on the process that
fetched it: under torchrun every rank counts its own micro-batches and `totals` sums them over ranks.
Sample i belongs to optimizer step i // per_step + 1 (per_step: train.batch_size; under DP-SGD the number of
windows, run/privacy.py), since the samples are consumed in order,
train.batch_size of them per step over all processes. The loader fetches a batch ahead of the step
it trains, so a fetch counts only once its step has ended (`settle`): a checkpoint then holds exactly
the windows of the steps before it, and a resumed run, which fetches the next ones again, counts
them once. The ledger is saved into every checkpoint and into `<run>/exposure.npz` at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gptfit.data.exposure import token_counts
from gptfit.data.windows import Windows
from gptfit.errors import UserError
from gptfit.files import atomic
from gptfit.run import distributed as dist

FILE = "exposure.npz"


class ExposureLedger:
    def __init__(self, n_tokens: int, block_size: int, per_step: int):
        # per_step: sample indices per optimizer step (train.batch_size; under DP-SGD the windows, run/privacy.py)
        self.block_size, self.per_step = block_size, per_step
        self.starts = np.zeros(n_tokens, dtype=np.int64)  # [tokens] windows this process fetched, by start
        self.last_seen = np.full(n_tokens, -1, dtype=np.int64)  # [tokens] step, -1: never
        # What a resumed run inherits from its checkpoint: the same on every rank, added once.
        self.base_starts = np.zeros_like(self.starts)
        self.base_last_seen = np.full_like(self.last_seen, -1)

        self.pending: list[tuple[int, int]] = []  # (sample index, offset) fetched, their step not ended yet

    def record(self, index: int, offset: int) -> None:
        self.pending.append((index, offset))

    def settle(self, step: int) -> None:
        """Count the fetched windows of steps up to `step` (the steps that have ended)."""
        later = []
        for index, offset in self.pending:
            window_step = index // self.per_step + 1
            if window_step > step:
                later.append((index, offset))
                continue
            self.starts[offset] += 1
            end = min(offset + self.block_size, len(self.last_seen))
            np.maximum(self.last_seen[offset:end], window_step, out=self.last_seen[offset:end])
        self.pending = later

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, last_seen) over every process (a collective under torchrun: every rank calls it)."""
        starts, last = self.starts, self.last_seen
        if torch.distributed.is_initialized():
            starts, last = torch.from_numpy(starts.copy()), torch.from_numpy(last.copy())
            dist.reduce_tensor(starts, "sum")
            dist.reduce_tensor(last, "max")
            starts, last = starts.numpy(), last.numpy()
        return self.base_starts + starts, np.maximum(self.base_last_seen, last)

    def load(self, path: Path) -> None:
        with np.load(path) as saved:
            starts, last_seen = saved["starts"].copy(), saved["last_seen"].copy()
        if len(starts) != len(self.starts):
            raise UserError(
                f"train.resume: {path} counts {len(starts)} training tokens, this run has "
                f"{len(self.starts)} (eval.prefix_tokens or eval.suffix_tokens changed the planted "
                "duplicates?); resume with the settings of the run, or start a new one"
            )
        self.base_starts, self.base_last_seen = starts, last_seen


def write_ledger(path: Path, starts: np.ndarray, last_seen: np.ndarray, block_size: int) -> None:
    with atomic(path) as tmp:
        counts = token_counts(starts, block_size)
        np.savez(tmp, starts=starts, last_seen=last_seen, counts=counts, block_size=np.int64(block_size))


class CountedWindows(Dataset):
    """A training dataset that records every window it hands out in the ledger."""

    def __init__(self, windows: Windows, ledger: ExposureLedger):
        self.windows, self.ledger = windows, ledger

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i >= 0:  # a negative index is DP-SGD's stand-in for an empty batch, trained on nothing (run/privacy.py)
            self.ledger.record(i, self.windows.offset(i))
        return self.windows[i]
