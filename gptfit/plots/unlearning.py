"""Unlearning's figures: the relearning attack of one run, and a study's forget-against-retain plane."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from gptfit.plots import finish

COLORS = {"unlearned": "tab:red", "retrained": "tab:green"}
STYLES = {"forget": "-", "heldout": "--"}


def relearn_curves(curves: dict, path: Path) -> Path:
    """Extraction of the forget set's second half against relearning steps: the unlearned and the retrained
    model, each fine-tuned on the first half (solid) or on as much held-out text (dashed)."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for data, by_model in curves.items():
        for who, curve in by_model.items():
            label = f"{who}, relearning on {'half the forget set' if data == 'forget' else 'held-out text'}"
            steps = [p["step"] for p in curve]
            ax.plot(steps, [p["extraction"] for p in curve], STYLES[data], color=COLORS[who], label=label)
    ax.set_ylim(-0.03, 1.03)
    return finish(fig, ax, "relearning attack", "relearning steps", "extraction of the other half", path)


def forget_retain_plane(points: list[dict], retrained: dict | None, path: Path) -> Path:
    """Each arm's path (a point per evaluation step, mean over seeds): forget-set extraction against the
    held-out loss's rise over the starting model (at x = 0), its last step labelled; the retrained model
    marked; the study's 0.2-nat budget dotted."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    methods = sorted({p["method"] for p in points})
    cmap = plt.get_cmap("tab10")
    for i, method in enumerate(methods):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["step"])
        ax.plot([p["retain_cost"] for p in mine], [p["forget"] for p in mine], ".-", color=cmap(i), label=method)
        last = mine[-1]
        where = (last["retain_cost"], last["forget"])
        ax.annotate(f"step {last['step']}", where, fontsize=6, xytext=(3, 3), textcoords="offset points")
    if retrained is not None:
        ax.scatter(
            [retrained["retain_cost"]],
            [retrained["forget"]],
            marker="*",
            s=160,
            color="black",
            zorder=3,
            label="retrained",
        )
    ax.axvline(0.2, color="gray", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=0.5)  # linear near the 0.2-nat budget, logarithmic out to a collapse
    x_label = "held-out loss rise over the starting model (nats; symlog)"
    return finish(fig, ax, "unlearning: forget against retain", x_label, "forget-set extraction", path)
