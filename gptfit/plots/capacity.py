"""The capacity figure (Morris et al. 2025): what each model memorized of uniformly random sets of growing size,
and its plateau against its parameters with the fitted bits per parameter."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from gptfit.plots import finish


def capacity_figure(frame: pd.DataFrame, models: pd.DataFrame, slope: float | None, paper: float, out: Path) -> Path:
    """Left: memorized bits against the dataset's bits, a line per model (seeds as points), under the line where
    the whole set is memorized; each model flattens at its plateau. Right: the plateaus against the parameters,
    with the fitted slope and the paper's 3.6 bits a parameter. frame: one row per run (gptfit.show.capacity);
    models: one row per model with its `plateau`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(len(models), 1)))
    for color, (_, m) in zip(colors, models.iterrows()):
        runs = frame[frame["params"] == m["params"]]
        cells = runs.groupby("dataset_bits", as_index=False)["bits"].mean()
        label = f"{m['model']} ({m['params'] / 1e3:.0f}K)"
        left.plot(cells["dataset_bits"], cells["bits"], "-o", color=color, label=label, markersize=4)
        left.scatter(runs["dataset_bits"], runs["bits"], color=color, s=10, alpha=0.5)
        left.axhline(m["plateau"], color=color, linestyle=":", linewidth=0.8)
    span = np.array([frame["dataset_bits"].min(), frame["dataset_bits"].max()])
    left.plot(span, span, "--", color="gray", linewidth=0.8, label="the whole set")
    left.set(xscale="log", yscale="log", xlabel="dataset (bits)", ylabel="memorized bits (capacity/bits_total)")
    left.set_title("memorized bits against dataset size")
    left.legend(fontsize=7)
    right.scatter(models["params"], models["plateau"], color=colors[: len(models)], zorder=3)
    xs = np.array([0, models["params"].max() * 1.1])
    if slope is not None:
        right.plot(xs, slope * xs, "-", color="tab:blue", label=f"fit: {slope:.2f} bits / parameter")
    right.plot(xs, paper * xs, "--", color="gray", label=f"Morris et al. 2025: {paper} bits / parameter")
    right.set(xlabel="parameters", ylabel="plateau (bits)", xlim=(0, xs[1]), ylim=(0, None))
    right.set_title("capacity against parameters")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "capacity.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def turn_figure(frame: pd.DataFrame, measures, out: Path) -> Path:
    """The turn on text: each measure against dataset bits over capacity (log scale), a line per model (the
    mean over seeds, seeds as points), with ratio 1, where the training set's information meets the model's
    capacity, marked. frame: one row per run (gptfit.show.turn); measures: (column, key, label) each."""
    fig, axes = plt.subplots(1, len(measures), figsize=(3.6 * len(measures), 3.6), dpi=110)
    models = frame.groupby(["params", "model"], sort=True)
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(models.ngroups, 1)))
    for ax, (column, _, label) in zip(axes, measures):
        for color, ((params, model), runs) in zip(colors, models):
            runs = runs.dropna(subset=[column])
            cells = runs.groupby("train_tokens", as_index=False)[["ratio", column]].mean()
            ax.plot(cells["ratio"], cells[column], "-o", color=color, markersize=4, label=f"{model} ({params:,})")
            ax.scatter(runs["ratio"], runs[column], color=color, s=10, alpha=0.5)
        ax.axvline(1.0, color="tab:red", linestyle="--", linewidth=1, label="dataset = capacity")
        ax.set(xscale="log", xlabel="dataset bits / capacity", title=label)
        ax.xaxis.set_minor_formatter(NullFormatter())  # a few decades at most: the minor labels would collide
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "capacity_text.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def membership_law_figure(points: pd.DataFrame, pooled, law, path: Path) -> Path:
    """Each run's membership AUC (loss score, with its interval) against its model's capacity over the dataset's
    bits, a colour per model, and the pooled sigmoid law. points: gptfit.show.capacity.membership_law's."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    models = list(dict.fromkeys(points["model"]))
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(len(models), 1)))
    for color, model in zip(colors, models):
        runs = points[points["model"] == model]
        low = (runs["mia_auc"] - runs["mia_auc_lo"]).clip(lower=0).fillna(0)
        high = (runs["mia_auc_hi"] - runs["mia_auc"]).clip(lower=0).fillna(0)
        ax.errorbar(runs["x"], runs["mia_auc"], yerr=[low, high], fmt="o", color=color, label=model, markersize=4)
    if pooled is not None:
        x = np.geomspace(points["x"].min(), points["x"].max(), 200)
        ax.plot(x, law(x, *pooled[0]), color="black", linewidth=1, label="sigmoid law, all models")
    ax.axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    x_label, y_label = "capacity / dataset (bits over bits)", "membership AUC (loss score)"
    return finish(fig, ax, "Morris et al.'s membership law", x_label, y_label, path)
