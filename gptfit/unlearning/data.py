"""The batches of an unlearning run: the run's own training windows, which never hold the forget set
(data.forget.until_step=0 keeps every window off it), each paired with one forget sequence, in turn."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class WithForget(Dataset):
    """`windows` (the run's training dataset), item i with `forget_ids` = forget[i mod n] ([length])."""

    def __init__(self, windows: Dataset, forget: torch.Tensor):
        self.windows, self.forget = windows, forget  # forget: [n, length]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**self.windows[i], "forget_ids": self.forget[i % len(self.forget)]}
