"""The mitigation figure: what each arm costs in held-out loss against what it leaves memorized."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

KINDS = ((False, "from scratch", "o", "tab:blue"), (True, "fine-tuning", "s", "tab:orange"))


# The offsets (in points) a label tries, in order: above its point, then below, then further out.
SLOTS = (4, -12, 14, -22, 24, -32, 34, -42)
CHAR, LINE = 4.2, 8.0  # the width of a 7-point character and the height of a line, in points


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _points(ax, points: list[dict], y: str, marker: str, color: str) -> None:
    """A point per arm at (held-out loss, `y`), with the loss's spread over seeds as x error bars and, for the
    AUC, the mean of the runs' 95% bounds as y error bars."""
    for p in points:
        yerr = None
        if y == "auc" and p["auc_lo"] is not None and p["auc_hi"] is not None:
            yerr = [[max(p["auc"] - p["auc_lo"], 0.0)], [max(p["auc_hi"] - p["auc"], 0.0)]]
        ax.errorbar(
            p["loss"], p[y], xerr=p["loss_sd"] or None, yerr=yerr, fmt=marker, color=color, capsize=3, markersize=6
        )
    ax.grid(alpha=0.3)


def _labels(ax, points: list[dict], y: str) -> None:
    """Each point's arm, in the first slot whose box misses the labels placed before it (to the left of the
    point where the right edge would cut it), with a leader line when it is not right above: arms of a family
    sit close together (six near AUC 1), and labels at one offset print over each other. Run after the
    layout is final: it places the labels in the axes' display coordinates."""
    ax.autoscale_view()
    scale = 72 / ax.figure.dpi  # display pixels to points
    right = ax.get_window_extent().x1 * scale
    placed = []
    for p in points:
        px, py = (v * scale for v in ax.transData.transform((p["loss"], p[y])))
        size = CHAR * len(p["arm"])
        dx, align = (5, "left") if px + 5 + size < right else (-5, "right")
        x0 = px + dx if align == "left" else px + dx - size
        boxes = [(x0, x0 + size, py + dy, py + dy + LINE) for dy in SLOTS]
        slot = next((i for i, box in enumerate(boxes) if not any(_overlap(box, b) for b in placed)), 0)
        placed.append(boxes[slot])
        ax.annotate(
            p["arm"],
            (p["loss"], p[y]),
            textcoords="offset points",
            xytext=(dx, SLOTS[slot]),
            ha=align,
            fontsize=7,
            arrowprops=dict(arrowstyle="-", lw=0.4, color="gray") if slot else None,
        )


def quality_memorization(points: list[dict], path: Path) -> Path:
    """Quality against memorization, a point per arm: held-out loss on x (left: better model); the `loss`
    membership score's AUC with its interval (top) and the extraction rate of the planted duplicates (bottom)
    on y. From-scratch and fine-tuning arms get a column each: they are scored on different corpora, so their
    held-out losses do not share an axis. points: [{"arm", "finetune", "loss", "loss_sd", "auc", "auc_lo",
    "auc_hi", "planted"}]."""
    kinds = [k for k in KINDS if any(p["finetune"] == k[0] for p in points)]
    fig, axes = plt.subplots(2, len(kinds), figsize=(5.5 * len(kinds), 7), dpi=110, squeeze=False)
    panels = []  # (axes, its points, the y key)
    for col, (finetune, title, marker, color) in enumerate(kinds):
        mine = sorted((p for p in points if p["finetune"] == finetune), key=lambda p: p["loss"])
        for row, y in enumerate(("auc", "planted")):
            shown = [p for p in mine if p[y] is not None]
            _points(axes[row][col], shown, y, marker, color)
            panels.append((axes[row][col], shown, y))
        axes[0][col].axhline(0.5, color="gray", linestyle="--", linewidth=0.8)  # a membership guess by chance
        axes[0][col].set_title(title)
        axes[0][col].set_ylabel("membership AUC, loss score [95%]")
        axes[1][col].set_ylabel("extraction rate of the planted duplicates")
        axes[1][col].set_xlabel("held-out loss (nats / token; left: better)")
    fig.suptitle("what each mitigation costs against what it leaves memorized (mean over seeds)", fontsize=10)
    fig.tight_layout()
    for ax, shown, y in panels:
        _labels(ax, shown, y)
    fig.savefig(path)
    plt.close(fig)
    return path
