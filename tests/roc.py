"""Single ROC figures for the tests, from gptfit's own ROC (membership.roc and its TPR-at-FPR rule): the
package reports them only as bootstrapped per-score keys."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc

from gptfit.metrics import membership


def tpr_at_fpr(members: np.ndarray, scores: np.ndarray, fpr: float, weights: np.ndarray | None = None) -> float:
    """The highest true-positive rate of any threshold whose false-positive rate is at most `fpr`."""
    return membership._tpr_at(*membership.roc(members, scores, weights), fpr)


def roc_auc(members: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """P(a random member scores above a random non-member), ties counting one half."""
    return float(auc(*membership.roc(members, scores, weights)))
