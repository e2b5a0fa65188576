"""Pictures of masked multi-head self-attention, each labelled with the prompt's tokens."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from gptfit.core.attention import copying_score, head_entropy


def heatmap_grid(maps: torch.Tensor, labels: list[str], title: str = ""):
    """A grid of heatmaps, layers x heads; rows are queries, columns the keys they attend to."""
    L, H, T, _ = maps.shape
    size = max(1.6, min(3.2, 0.22 * T))
    fig, axes = plt.subplots(L, H, figsize=(size * H + 1, size * L + 0.6), dpi=100, squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(maps[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer} head {head}", fontsize=7)
            show = T <= 24
            ax.set_xticks(range(T) if show else [])
            ax.set_yticks(range(T) if show else [])
            if show:
                ax.set_xticklabels(labels, rotation=90, fontsize=5)
                ax.set_yticklabels(labels, fontsize=5)
    fig.suptitle(title or "attention (rows: query tokens, columns: key tokens)")
    fig.tight_layout()
    return fig


def line_diagram(
    maps: torch.Tensor,
    labels: list[str],
    layer: int,
    head: int | None = None,
    threshold: float = 0.02,
    title: str = "",
):
    """Tokens in two columns: each query token (right) linked to every earlier or same token it attends
    to (left), the line's opacity its weight. `head=None` draws the mean over heads. Lines below
    `threshold` are left out. Each line's gid is "query->key", so what is drawn can be checked."""
    weights = maps[layer].mean(0) if head is None else maps[layer, head]  # [query, key]
    T = len(labels)
    fig, ax = plt.subplots(figsize=(5, max(3, 0.32 * T)), dpi=100)
    for i in range(T):
        ax.text(1.02, -i, labels[i], va="center", ha="left", fontsize=8)
        ax.text(-0.02, -i, labels[i], va="center", ha="right", fontsize=8)
        for j in range(i + 1):  # keys up to the query itself: the mask allows nothing later
            w = float(weights[i, j])
            if w > threshold:
                ax.plot([0, 1], [-j, -i], color="tab:blue", alpha=min(1.0, w), linewidth=1 + 2 * w, gid=f"{i}->{j}")
    ax.set_xlim(-0.6, 1.6)
    ax.axis("off")
    which = "mean over heads" if head is None else f"head {head}"
    ax.set_title(title or f"layer {layer}, {which}: query (right) -> key (left)", fontsize=9)
    fig.tight_layout()
    return fig


def head_summary(maps: torch.Tensor, tokens: list[int], title: str = ""):
    """Per head: attention entropy, and attention to the token after an earlier occurrence of the current
    token (a copying signature)."""
    entropy, copying = head_entropy(maps), copying_score(maps, tokens)
    L, H = entropy.shape
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
    for ax, values, name in ((left, entropy, "entropy (nats)"), (right, copying, "copying score")):
        im = ax.imshow(values.numpy(), cmap="magma", aspect="auto")
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(name)
        for layer in range(L):
            for head in range(H):
                ax.text(head, layer, f"{values[layer, head]:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax)
    fig.suptitle(title or "per-head summaries")
    fig.tight_layout()
    return fig


def save_all(
    maps: torch.Tensor, labels: list[str], tokens: list[int], out: Path, layer: int, head: int | None
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "attention_heatmaps.png": heatmap_grid(maps, labels),
        "attention_lines.png": line_diagram(maps, labels, layer, head),
        "attention_heads.png": head_summary(maps, tokens),
    }
    paths = []
    for name, fig in figures.items():
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths
