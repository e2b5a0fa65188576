"""The spectrum of a fine-tuning's weight change (Biderman et al. 2024, "LoRA Learns Less and Forgets Less",
their spectral analysis): for each weight matrix, the rank that explains a share of the change
Delta W = W_tuned - W_base, the fewest singular values whose squares sum to that share of all the squares
(of the squared Frobenius norm). A LoRA of rank r can only make changes of rank r or less; full fine-tuning's
rank at 90% says how far its change is from that."""

from __future__ import annotations

import torch

SHARE = 0.9  # the share of the change's squared norm the rank explains, as in Biderman et al.


def rank_for_share(delta: torch.Tensor, share: float = SHARE) -> int:
    """The fewest singular values of `delta` ([out, in]) whose squares hold `share` of their sum; 0 for a
    matrix that did not change."""
    sigma = torch.linalg.svdvals(delta.double())
    energy = sigma.square()
    total = energy.sum()
    if total == 0:
        return 0
    held = torch.cumsum(energy, 0) / total
    # The first index whose cumulative share reaches `share` (a hair of slack for rounding at 1.0).
    return int(torch.searchsorted(held, torch.tensor(share - 1e-12, dtype=held.dtype)).item()) + 1


def change_ranks(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float = SHARE) -> list[dict]:
    """One row per weight matrix present in both state dicts with the same 2-D shape (embeddings and the
    output layer included, biases and norms left out): its name, its full rank min(out, in), and the rank
    that explains `share` of its change."""
    rows = []
    for name, w in tuned.items():
        b = base.get(name)
        if w.ndim != 2 or b is None or b.shape != w.shape:
            continue
        rows.append({"matrix": name, "full_rank": min(w.shape), "rank": rank_for_share(w.float() - b.float(), share)})
    return rows
