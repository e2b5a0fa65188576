"""Membership-inference figures: ROC curves on log-log axes, where the low false-positive rates that
matter (Carlini et al. 2022) are visible, and the counterfactual memorization of shadow-model sweeps."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], n_nonmembers: int, title: str = ""):
    """The log-log ROC of every score ({label: (false-positive rates, true-positive rates)}) and the chance
    line. Rates below one non-member in `n_nonmembers` cannot be observed: the axes start there."""
    floor = 1.0 / max(n_nonmembers, 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle=":", label="chance")
    for label, (false_pos, true_pos) in curves.items():
        # A step curve: a threshold holds its TPR until the next false positive.
        ax.step(np.maximum(false_pos, floor), np.maximum(true_pos, floor), where="post", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title or "membership inference")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


def counterfactual_figure(accuracy: np.ndarray, loss: np.ndarray, exposures: np.ndarray):
    """Counterfactual memorization per sequence: the distribution of each measure, and the accuracy
    measure against the sequence's mean token exposures when it was in."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    left.hist(accuracy, bins=40, color="tab:purple")
    left.set_xlabel("counterfactual memorization (per-token accuracy, in - out)")
    middle.hist(loss, bins=40, color="tab:green")
    middle.set_xlabel("counterfactual memorization (loss, out - in)")
    for ax in (left, middle):
        ax.set_ylabel("sequences")
        ax.set_yscale("log")
    right.scatter(exposures, accuracy, s=4, alpha=0.4, color="tab:purple")
    right.set_xlabel("mean token exposures when in")
    right.set_ylabel("counterfactual memorization (accuracy)")
    for ax in (left, middle, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
