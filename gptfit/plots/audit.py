"""The privacy audit's figure: the one-run audit's lower bound on epsilon against the accountant's upper bound."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def audit_figure(points: list[dict], ceiling: float, path: Path) -> Path:
    """`points`: {"label", "epsilon" (the accountant's; None without DP), "lower"} per run. A run without DP
    sits at the right edge, where no upper bound holds; the diagonal is where the two bounds would meet, and
    `ceiling` the largest bound the audit's guesses can give (every guess right)."""
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    private = [p for p in points if p["epsilon"] is not None]
    top = max([p["epsilon"] for p in private] + [p["lower"] for p in points] + [1.0]) * 2
    edge = top * 2  # where the runs without DP stand
    span = np.geomspace(0.1, top, 50)
    ax.plot(span, span, color="0.6", linestyle="--", label="lower bound = accountant's epsilon")
    ax.axhline(ceiling, color="tab:green", linestyle=":", label=f"every guess right: {ceiling:.2f}")
    for p in points:
        x = p["epsilon"] if p["epsilon"] is not None else edge
        ax.scatter([x], [p["lower"]], color="tab:blue" if p["epsilon"] is not None else "tab:red", zorder=3)
        ax.annotate(p["label"], (x, p["lower"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(edge / 1.4, color="0.85", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)  # bounds of 0 stay on the axis
    ax.set_ylim(-0.02, max(ceiling, max(p["lower"] for p in points)) * 3)
    ax.set_xlim(0.1, edge * 1.5)
    ax.set_xlabel("accountant's epsilon (upper bound); right edge: no DP-SGD")
    ax.set_ylabel("audit's epsilon, 95% lower bound")
    ax.set_title("one-run privacy audit (Steinke et al. 2023)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
