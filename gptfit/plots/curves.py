"""Figures of a run, drawn with matplotlib (Agg: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from gptfit import keys


def loss_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """Train and validation loss against tokens seen, with the validation minimum marked."""
    rows = [r for r in rows if keys.VAL_LOSS in r]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    x = [r["tokens_seen"] for r in rows]
    ax.plot(x, [r[keys.TRAIN_LOSS] for r in rows], label="train", color="tab:blue")
    ax.plot(x, [r[keys.VAL_LOSS] for r in rows], label="validation", color="tab:orange")
    if rows:
        best = min(rows, key=lambda r: r[keys.VAL_LOSS])
        ax.scatter(
            [best["tokens_seen"]],
            [best[keys.VAL_LOSS]],
            color="tab:orange",
            zorder=3,
            label=f"val minimum (step {best['step']})",
        )
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


MEMORIZATION_KEYS = {
    keys.EXTRACTION_TRAIN: ("extraction (train)", "tab:red", "-"),
    "mem/extraction_rate_val": ("extraction (held-out)", "tab:red", ":"),
    "mem/exact_match_train": ("exact match (train)", "tab:purple", "-"),
    "mem/exact_match_val": ("exact match (held-out)", "tab:purple", ":"),
    keys.MIA_AUC: ("membership AUC", "tab:green", "-"),
}


def memorization_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """Memorization rates against tokens seen (right) beside the loss curves (left)."""
    rows = [r for r in rows if keys.VAL_LOSS in r]
    x = [r["tokens_seen"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    left.plot(x, [r[keys.TRAIN_LOSS] for r in rows], label="train", color="tab:blue")
    left.plot(x, [r[keys.VAL_LOSS] for r in rows], label="validation", color="tab:orange")
    left.set_ylabel("loss (nats / token)")
    for key, (label, color, style) in MEMORIZATION_KEYS.items():
        if any(key in r for r in rows):
            right.plot(
                [r["tokens_seen"] for r in rows if key in r],
                [r[key] for r in rows if key in r],
                label=label,
                color=color,
                linestyle=style,
            )
    right.set_ylim(-0.02, 1.02)
    right.set_ylabel("rate")
    for ax in (left, right):
        ax.set_xlabel("tokens seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "memorization")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def duplication_curve(rows: list[dict], path: Path, title: str = "") -> Path | None:
    """Extraction and loss of the planted sequences against their number of copies (log x), at the last
    evaluation that measured them; the held-aside sequences never planted (count 0) as dashed lines."""
    row = next((r for r in reversed(rows) if any(k.startswith("dup/") for k in r)), None)
    if row is None:
        return None  # no evaluation measured the ladder (a run resumed at its last step)
    counts = sorted(int(k.split("/")[1]) for k in row if k.startswith("dup/") and k.endswith("/loss"))
    planted = [c for c in counts if c > 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for ax, key, label in ((left, "extraction_rate", "extraction rate"), (right, "loss", "loss (nats)")):
        ax.plot(planted, [row[f"dup/{c}/{key}"] for c in planted], marker="o", color="tab:red", label="planted")
        if 0 in counts:
            ax.axhline(row[f"dup/0/{key}"], color="gray", linestyle="--", label="never planted (0 copies)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("copies in the training set")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.set_ylim(-0.02, 1.02)
    left.legend(fontsize=8)
    fig.suptitle(title or f"memorization against duplication (step {row['step']})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def forgetting_curve(rows: list[dict], until_step: int, path: Path, title: str = "") -> Path | None:
    """The forgotten set's extraction, suffix match and loss against the step, with its last step marked."""
    rows = [r for r in rows if "forget/loss" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    left.plot(steps, [r["forget/extraction_rate"] for r in rows], marker="o", color="tab:red", label="extraction rate")
    left.plot(steps, [r["forget/suffix_match"] for r in rows], marker=".", color="tab:orange", label="suffix match")
    left.set_ylim(-0.02, 1.02)
    left.legend(fontsize=8)
    right.plot(steps, [r["forget/loss"] for r in rows], marker="o", color="tab:purple", label="forgotten set")
    right.plot(steps, [r[keys.VAL_LOSS] for r in rows], color="tab:gray", linestyle=":", label="held-out text")
    right.set_ylabel("loss (nats)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.axvline(until_step, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("step (dashed: the last one that held them)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "forgetting after the last exposure")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
