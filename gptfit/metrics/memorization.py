"""How much of its training text a model has memorized, measured the ways the literature does.

- Exact-match memorization (Tirumala et al. 2022): the share of positions whose most probable next
  token is the true one, on training text and on held-out text.
- Loss-based membership inference (Yeom et al. 2018): the ROC-AUC of minus the per-window loss at
  telling training windows from held-out ones; 0.5 means no leak, 1.0 perfectly separable.
- Extractable memorization (Carlini et al. 2022; Pythia's 32 + 32 tokens): greedy decoding from a
  window's prefix reproduces its suffix exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def window_stats(model, windows: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([n] mean next-token loss per window, [n] share of positions whose argmax is the true token)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, hits = [], []
    try:
        for batch in windows.split(batch_size):
            batch = batch.to(device)
            logits = model(input_ids=batch).logits[:, :-1].float()  # [b, T-1, vocab]
            targets = batch[:, 1:]
            losses.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1).cpu())
            hits.append((logits.argmax(-1) == targets).float().mean(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(losses), torch.cat(hits)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half (Mann-Whitney U)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # Tied scores share the mean of their ranks.
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first[counts > 1], counts[counts > 1]):
        ranks[order[start : start + count]] = start + (count + 1) / 2
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def mia_auc(train_losses: np.ndarray, val_losses: np.ndarray) -> float:
    """Membership inference by loss: training windows should have the lower loss."""
    return roc_auc(-np.asarray(train_losses), -np.asarray(val_losses))
