"""Attention (eval.attention) at every evaluation: the per-head entropy of a fixed prompt's attention, and its
pictures (a heat map of every head, the last layer as lines)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from gptfit.core.attention import attention_maps, head_entropy
from gptfit.data.tokenizer import encode_text
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.plots.attention import heatmap_grid, line_diagram

log = logging.getLogger(__name__)


def attention_ids(tokenizer, prompt: str, val: np.ndarray, block_size: int) -> list[int]:
    """The attention pictures' prompt, at most a window long; where the tokenizer cannot spell it
    (data=uniform), the start of the held-out text instead, with a warning."""
    ids = encode_text(tokenizer, prompt)
    if ids is None:
        log.warning("eval.attention_prompt: the tokenizer cannot encode it; the start of the held-out text instead")
        ids = val[:block_size].tolist()
    return ids[:block_size]


class Attention(Measure):
    keys = ("attn/<name>/entropy",)
    when = When.EACH

    def __init__(self, setup: Setup):
        self.tokenizer = setup.tokenizer
        self.ids = attention_ids(setup.tokenizer, setup.eval.attention_prompt, setup.corpus.val, setup.block_size)

    def __call__(self, ev: Evaluation) -> dict:
        maps = attention_maps(ev.model, torch.tensor(self.ids))  # [layer, head, query, key]
        entropy = head_entropy(maps)
        labels = [repr(self.tokenizer.decode([t]))[1:-1] for t in self.ids]
        ev.figures["attention/heatmaps"] = heatmap_grid(maps, labels)
        ev.figures["attention/lines"] = line_diagram(maps, labels, layer=maps.shape[0] - 1)
        return {
            f"attn/l{layer}h{h}/entropy": float(entropy[layer, h])
            for layer in range(maps.shape[0])
            for h in range(maps.shape[1])
        }


def build(setup: Setup) -> Attention | None:
    return Attention(setup) if setup.eval.attention else None
