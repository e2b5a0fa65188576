"""Figures of decoding (matplotlib, Agg): what the transforms do to one next-token distribution, the greedy
path, and the beam-search tree. They read `gptfit.core.sampling` results; `label(id)` spells a token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from gptfit.core.sampling.results import Step
from gptfit.core.sampling.transforms import apply_temperature, top_k_filter, top_p_filter

Label = Callable[[int], str]


def transform_panels(
    logits: torch.Tensor,  # [vocab] the model's next-token scores for one step
    label: Label,
    path: Path,
    temperatures: Sequence[float] = (0.7, 1.3),
    top_k: int = 6,
    top_p: float = 0.92,
    n: int = 20,
    title: str = "",
) -> Path:
    """The next-token distribution before and after each transform, on the same n most probable tokens.

    Panels: the model (T = 1), each temperature, top-k, top-p. Removed tokens show as empty slots; each
    panel says how many tokens keep a non-zero probability and how much of the model's mass they held.
    """
    scores = logits.float()[None]  # [1, vocab]
    model_probs = torch.softmax(scores, -1)[0]
    panels = [("model (T = 1)", scores)]
    panels += [(f"temperature {t:g}", apply_temperature(scores, t)) for t in temperatures]
    panels += [
        (f"top-k, k = {top_k}", top_k_filter(scores, top_k)),
        (f"top-p, p = {top_p:g}", top_p_filter(scores, top_p)),
    ]
    order = torch.argsort(model_probs, descending=True)[:n]  # the x axis of every panel

    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6, 0.45 * len(order)), 1.9 * len(panels)), dpi=110, sharex=True
    )
    for ax, (name, s) in zip(axes, panels):
        probs = torch.softmax(s, -1)[0]
        kept = probs > 0
        colors = ["tab:blue" if k else "lightgrey" for k in kept[order]]
        ax.bar(range(len(order)), probs[order].tolist(), color=colors)
        mass = float(model_probs[kept].sum())
        ax.set_title(f"{name}: {int(kept.sum())} tokens kept, {mass:.0%} of the model's mass", fontsize=9)
        ax.set_ylabel("p")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(order)))
    axes[-1].set_xticklabels([label(int(i)) for i in order], rotation=60, ha="right", fontsize=8)
    fig.suptitle(title or "next-token distribution under each transform", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def greedy_path(steps: list[Step], label: Label, path: Path, row: int = 0, title: str = "") -> Path:
    """For each step, the candidates from most to least probable (top row: the token greedy takes)."""
    ids = torch.stack([s.top_ids[row] for s in steps], dim=1)  # [n, steps]
    probs = torch.stack([s.top_probs[row] for s in steps], dim=1)
    n, T = probs.shape
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * T), 0.6 * n + 1.4), dpi=110)
    ax.imshow(probs.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for j in range(T):
        for i in range(n):
            p = float(probs[i, j])
            ax.text(
                j,
                i,
                f"{label(int(ids[i, j]))}\n{p:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if p > 0.6 else "black",
                fontweight="bold" if i == 0 else "normal",
            )
    ax.set_xticks(range(T))
    ax.set_xticklabels([str(j + 1) for j in range(T)])
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"#{i + 1}" for i in range(n)])
    ax.set_xlabel("new token")
    ax.set_ylabel("candidate rank")
    ax.set_title(title or "greedy path: the most probable next token at each step (top row)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def beam_tree(
    steps: list[Step], label: Label, path: Path, best: Sequence[int] = (), batch: int = 0, title: str = ""
) -> Path:
    """Running beams per step (token and sum of log-probs), joined to the beam each one extends.

    `best`: the new tokens of the returned sequence; the beams on its way are drawn in red.
    """
    best = [int(t) for t in best]
    prefixes: list[list[list[int]]] = []  # per step, per beam: the new tokens so far
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(steps) + 1), 0.9 * steps[0].parents.shape[1] + 1.5), dpi=110)
    ax.scatter([-1], [0], color="black", s=18, zorder=3)
    ax.text(-1, 0, "prompt ", ha="right", va="center", fontsize=8)
    for t, s in enumerate(steps):
        parents, tokens, scores = s.parents[batch].tolist(), s.token_ids[batch].tolist(), s.scores[batch].tolist()
        previous = prefixes[-1] if prefixes else [[] for _ in parents]
        current = [previous[p] + [tok] for p, tok in zip(parents, tokens)]
        prefixes.append(current)
        for j, (p, tok, score) in enumerate(zip(parents, tokens, scores)):
            on_best = current[j] == best[: t + 1]
            color = "tab:red" if on_best else "tab:blue"
            ax.plot([t - 1, t], [p if t else 0, j], color=color, lw=2 if on_best else 1, alpha=0.8, zorder=1)
            ax.scatter([t], [j], color=color, s=18, zorder=3)
            ax.text(t, j - 0.18, f"{label(tok)}\n{score:.2f}", ha="center", va="top", fontsize=7)
    ax.set_xticks(range(-1, len(steps)))
    ax.set_xticklabels(["prompt"] + [str(t + 1) for t in range(len(steps))])
    ax.set_yticks(range(steps[0].parents.shape[1]))
    ax.set_xlabel("new token")
    ax.set_ylabel("beam")
    ax.invert_yaxis()
    ax.set_title(
        title or "beam search: each beam's token and sum of log-probs (red: the returned sequence)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
