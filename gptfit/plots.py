"""Figures of a run, drawn with matplotlib (Agg: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """Train and validation loss against tokens seen, with the validation minimum marked."""
    rows = [r for r in rows if "val/loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    x = [r["tokens_seen"] for r in rows]
    ax.plot(x, [r["train/loss"] for r in rows], label="train", color="tab:blue")
    ax.plot(x, [r["val/loss"] for r in rows], label="validation", color="tab:orange")
    if rows:
        best = min(rows, key=lambda r: r["val/loss"])
        ax.scatter([best["tokens_seen"]], [best["val/loss"]], color="tab:orange", zorder=3,
                   label=f"val minimum (step {best['step']})")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
