"""Window losses, and the loss-based membership-inference AUC (Yeom et al. 2018): the ROC-AUC of minus
the loss at telling training sequences from held-out ones; 0.5 means no leak, 1.0 perfectly separable.
The per-sequence measures (exact match, extraction) are in gptfit.metrics.sequences.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from gptfit.metrics.scoring import score_sequences


def window_stats(model, windows: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([n] mean next-token loss per window, [n] share of positions whose argmax is the true token)."""
    scores = score_sequences(model, windows, batch_size)
    return scores.mean(), scores.hit_rate()


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half (Mann-Whitney U)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return float(roc_auc_score(labels, np.concatenate([pos, neg])))


def mia_auc(train_losses: np.ndarray, val_losses: np.ndarray) -> float:
    """Membership inference by loss: training windows should have the lower loss."""
    return roc_auc(-np.asarray(train_losses), -np.asarray(val_losses))
