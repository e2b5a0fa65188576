"""Figures of fine-tuning: what a run learns of its narrow corpus against what it forgets of general text."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from gptfit import keys
from gptfit.plots import finish

METHOD_MARKERS = {"full": "o", "lora": "s", "top_layers": "^", "head": "D"}


def general_names(rows: list[dict]) -> list[str]:
    """The general corpora a run scored (`general/<name>/loss`), in order."""
    return sorted({k.split("/")[1] for r in rows for k in r if k.startswith("general/") and k.endswith("/loss")})


def learn_forget_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """A run's narrow held-out loss (what it learns) beside each general corpus's loss (what it forgets),
    against tokens seen; the narrow loss's minimum marked."""
    rows = [r for r in rows if keys.VAL_LOSS in r]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    x = [r["tokens_seen"] for r in rows]
    ax.plot(x, [r[keys.VAL_LOSS] for r in rows], label="narrow held-out (val/loss)", color="tab:orange")
    for name in general_names(rows):
        ax.plot(x, [r.get(f"general/{name}/loss") for r in rows], label=f"general: {name}", linestyle="--")
    if rows:
        best = min(rows, key=lambda r: r[keys.VAL_LOSS])
        ax.scatter([best["tokens_seen"]], [best[keys.VAL_LOSS]], color="tab:orange", zorder=3, label="best step")
    title = title or "learning the narrow corpus, forgetting general text"
    return finish(fig, ax, title, "tokens seen", "loss (nats / token)", path, legend_size=8)


def learn_forget_plane(points: list[dict], path: Path) -> Path:
    """Biderman et al.'s learn-forget plane with memorization added: a point per run at (narrow held-out loss
    at its best step, general loss rise at the end), marked by method, sized by extraction of its training
    sequences. points: [{"method", "learn", "forget", "extraction", "size"}]."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    sizes = sorted({p["size"] for p in points})
    cmap = plt.get_cmap("viridis")
    for method, marker in METHOD_MARKERS.items():
        mine = [p for p in points if p["method"] == method]
        if not mine:
            continue
        ax.scatter(
            [p["learn"] for p in mine],
            [p["forget"] for p in mine],
            s=[20 + 200 * (p["extraction"] or 0) for p in mine],
            c=[cmap(sizes.index(p["size"]) / max(len(sizes) - 1, 1)) for p in mine],
            marker=marker,
            edgecolors="black",
            linewidths=0.5,
            label=method,
            alpha=0.8,
        )
    for i, size in enumerate(sizes):
        ax.scatter([], [], color=cmap(i / max(len(sizes) - 1, 1)), label=f"{size:,} tokens")
    ax.set_xlabel("narrow held-out loss at the best step (nats; left: learned more)")
    ax.set_ylabel("general loss rise at the end (nats; up: forgot more)")
    ax.set_title("learn vs. forget; marker size: extraction of training sequences", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def learn_forget_trajectories(lines: list[dict], front: list[dict], path: Path) -> Path:
    """Every evaluation of every run on the learn-forget plane, joined in step order (a run's path from its
    first evaluation to its last), coloured by method and shaded by learning rate (darker: higher), with the
    Pareto frontier over all of them drawn in black. lines: [{"method", "lr", "points": [(step, learn,
    forget)]}]; front: [{"learn", "forget"}], in order of learn."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=110)
    colours = dict(zip(METHOD_MARKERS, ("tab:red", "tab:blue", "tab:green", "tab:purple")))
    rates = sorted({ln["lr"] for ln in lines})
    labelled = set()
    for ln in sorted(lines, key=lambda ln: (ln["method"], ln["lr"])):
        family = ln["method"].split()[0]
        shade = 0.35 + 0.65 * (rates.index(ln["lr"]) + 1) / len(rates)
        label = ln["method"] if ln["method"] not in labelled else None
        labelled.add(ln["method"])
        ax.plot(
            [p[1] for p in ln["points"]],
            [p[2] for p in ln["points"]],
            marker=METHOD_MARKERS.get(family, "o"),
            markersize=3,
            linewidth=1,
            color=colours.get(family, "tab:gray"),
            alpha=shade,
            label=label,
        )
    if front:
        ax.step(
            [p["learn"] for p in front],
            [p["forget"] for p in front],
            where="post",
            color="black",
            linewidth=1.5,
            label="Pareto frontier",
        )
    title = "every evaluation of every run; darker: higher learning rate"
    x_label, y_label = "narrow held-out loss (nats; left: learned more)", "general loss rise (nats; up: forgot more)"
    return finish(fig, ax, title, x_label, y_label, path, title_size=9)
