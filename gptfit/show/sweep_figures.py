"""Figures of a sweep: gap, extraction and membership AUC against corpus size, every run's validation
curve, copy rate per decoding setting, the decoding settings side by side, and the grammar's shares."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from gptfit import keys
from gptfit.record import RunRecord
from gptfit.show.sweep import by_setting, by_values, fmt, grammar_settings, mean_by_size, settings_of, varying
from gptfit.show.sweep_sequences import LABELS, extraction_by_exposure
from gptfit.show.sweep_sequences import label as run_label


def grammar_figure(done: list[RunRecord]):
    """Novel-valid share against corpus size per decoding setting, and the model's vs the grammar's NLL
    (a matplotlib figure; None without grammar metrics)."""
    settings = grammar_settings(done)
    if not settings:
        return None

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=100)
    for s in settings:
        axes[0].plot(*mean_by_size(done, f"grammar/{s}/novel_valid"), marker="o", label=s)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("share of sentences: novel and valid")
    axes[1].plot(*mean_by_size(done, "grammar/val_nll_model"), marker="o", color="tab:red", label="model")
    axes[1].plot(
        *mean_by_size(done, "grammar/val_nll_true"), marker="o", color="black", linestyle="--", label="grammar (true)"
    )
    axes[1].set_ylabel("held-out NLL per sentence (nats)")
    for ax in axes:
        if not any(len(line.get_xdata()) for line in ax.get_lines()):
            # no run measured it (no sample held a complete sentence): a log axis of nothing cannot be drawn
            ax.text(0.5, 0.5, "no run measured this", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.set_xscale("log")
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def sweep_figures(runs: list[RunRecord], sweep: Path) -> list[Path]:
    """Draw the figures of the finished runs into the sweep folder; return their paths."""
    done = sorted((r for r in runs if r.status == "finished" and r.train_tokens), key=lambda r: r.train_tokens)
    figures = {
        "report_gap.png": ladder_figure(done),
        "report_val_loss.png": val_loss_figure(done),
        "report_copy_rate.png": copy_rate_figure(done),
        "report_decoding.png": decoding_figure(done),
        "report_grammar.png": grammar_figure(done),
    }
    paths = []
    for name, fig in figures.items():
        if fig is not None:
            fig.tight_layout()
            paths.append(sweep / name)
            fig.savefig(paths[-1])
            plt.close(fig)
    exposure = exposure_figure(runs, sweep)
    if exposure is not None:
        paths.append(exposure)
    return paths


def ladder_figure(done: list[RunRecord]):
    """The gap, extraction and membership AUC against corpus size: each run, and the mean of each size."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    for ax, (key, label) in zip(
        axes,
        [
            (keys.GAP, "generalization gap (nats)"),
            (keys.EXTRACTION_TRAIN, "extraction rate (train)"),
            (keys.MIA_AUC, "membership-inference AUC"),
        ],
    ):
        pts = [(r.train_tokens, r.final[key]) for r in done if key in r.final]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:red")
        ax.plot(*mean_by_size(done, key), color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("training tokens")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    return fig


def val_loss_figure(done: list[RunRecord]):
    """Every run's validation loss curve (None when no run logged one)."""
    curves = [(r, rows) for r in done if (rows := [x for x in r.rows if keys.VAL_LOSS in x])]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    cmap = plt.get_cmap("viridis")
    for i, (r, rows) in enumerate(curves):
        ax.plot(
            [x["tokens_seen"] for x in rows],
            [x[keys.VAL_LOSS] for x in rows],
            color=cmap(i / max(len(curves) - 1, 1)),
            label=f"{r.train_tokens} tokens (job {r.job})",
        )
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def copy_rate_figure(done: list[RunRecord]):
    """Copy rate against corpus size, a line per decoding setting (None for runs that generate no samples,
    as data=uniform's)."""
    settings = settings_of(done)
    if not settings:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for s in settings:
        ax.plot(*mean_by_size(done, f"gen/{s}/copy_rate"), marker="o", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("copy rate (samples with a 16-token training span)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def decoding_figure(done: list[RunRecord]):
    """Each decoding setting side by side: copy rate and held-out-like novelty, one bar per corpus size."""
    swept, _ = varying(done)
    groups = by_setting(done, swept)
    settings = sorted(
        {s for g in groups.values() for s in g},
        key=lambda s: -np.mean([np.mean(g[s]["copy_rate"]) for g in groups.values() if s in g]),
    )
    if settings:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
        width = 0.8 / len(groups)
        for i, (values, g) in enumerate(sorted(groups.items(), key=by_values)):
            label = ", ".join(f"{k}={fmt(v)}" for k, v in zip([k for k in swept if k != "seed"], values)) or "all runs"
            x = np.arange(len(settings)) + i * width
            for ax, key in zip(axes, ("copy_rate", "novel_8gram")):
                ax.bar(
                    x, [np.mean(g[s][key]) if s in g and key in g[s] else np.nan for s in settings], width, label=label
                )
        for ax, title in zip(axes, ("copy rate (samples with a training span)", "novel 8-grams of the samples")):
            ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings, rotation=20)
            ax.set_ylim(0, 1)
            ax.set_title(title)
            ax.grid(alpha=0.3, axis="y")
        axes[0].legend(fontsize=7)
        return fig
    return None


def exposure_figure(runs: list[RunRecord], sweep: Path) -> Path | None:
    """Extraction against token exposures (binned), one line per finished run with a per-sequence table."""
    measured = [(r, extraction_by_exposure(r)) for r in runs if r.status == "finished"]
    measured = [(r, bins) for r, bins in measured if bins is not None]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    cmap = plt.get_cmap("viridis")
    for i, (run, bins) in enumerate(measured):
        points = [(b, value[0]) for b, value in enumerate(bins) if value is not None]
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            label=run_label(run),
            color=cmap(i / max(len(measured) - 1, 1)),
        )
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=20)
    ax.set_xlabel("token exposures (training windows that held each token, mean over the sequence)")
    ax.set_ylabel("extraction rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # run labels can be long: beside the axes
    path = sweep / "report_exposure.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
