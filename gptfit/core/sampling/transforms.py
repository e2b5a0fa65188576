"""The logits transforms of sampling: pure functions of [batch, vocab] scores, computed in float32.

The semantics are transformers' (generation/logits_process.py): temperature -> top-k -> top-p in that
order; top-k keeps ties at the boundary; top-p keeps the smallest set whose mass reaches p, and
always the `min_tokens_to_keep` most probable tokens. Where tied scores straddle top-p's cut, the sort
is stable, so the lower token id goes first: the same on every machine (transformers' unstable sort
leaves it to the platform), and what the explorer page computes.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scores / temperature: < 1 sharpens the distribution, > 1 flattens it (0 is greedy: no division)."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: must be > 0 here (0 means greedy, see `generate`)")
    return logits.float() / float(temperature)


def top_k_filter(
    logits: torch.Tensor,  # [batch, vocab]
    top_k: int,
    min_tokens_to_keep: int = 1,
    filter_value: float = -math.inf,
) -> torch.Tensor:
    """Keep every token whose score is >= the k-th largest (ties at the boundary survive); 0 = off."""
    logits = logits.float()
    if top_k <= 0:
        return logits
    k = min(max(top_k, min_tokens_to_keep), logits.shape[-1])
    kth = torch.topk(logits, k).values[..., -1:]  # [batch, 1]
    return logits.masked_fill(logits < kth, filter_value)


def top_p_filter(
    logits: torch.Tensor,  # [batch, vocab]
    top_p: float,
    min_tokens_to_keep: int = 1,
    filter_value: float = -math.inf,
) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose mass reaches top_p; 1.0 = off."""
    logits = logits.float()
    if top_p >= 1.0:
        return logits
    if min_tokens_to_keep == 1:
        return _top_p_settled_rows(logits, top_p, filter_value)
    return _sorted_top_p(logits, top_p, min_tokens_to_keep, filter_value)


def _top_p_settled_rows(logits: torch.Tensor, top_p: float, filter_value: float) -> torch.Tensor:
    """top_p_filter with one token kept at least, sorting only the rows that need it. A row whose most
    probable token holds at least max(top_p, 1/2) of the mass, plus a bound on the float32 rounding of
    the softmax and of the sorted path's cumulative sum over the vocabulary (4 * vocab * 2^-23), keeps
    that token alone: every other token's ascending cumulative mass stays below 1 - top_p, whatever
    their order, and no other token can tie with it. The sort is nearly all of top-p's cost, and on text
    a model has memorized such rows are the rule."""
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)  # [rows, vocab]
    top, best = flat.softmax(dim=-1).max(dim=-1)  # [rows]
    settled = top >= max(top_p, 0.5) + 4 * vocab * 2.0**-23  # [rows]
    if not bool(settled.any()):
        return _sorted_top_p(logits, top_p, 1, filter_value)
    out = torch.full_like(flat, filter_value)  # [rows, vocab]
    kept = best[:, None]  # [rows, 1]
    out.scatter_(1, kept, flat.gather(1, kept))
    if not bool(settled.all()):
        out[~settled] = _sorted_top_p(flat[~settled], top_p, 1, filter_value)
    return out.view(logits.shape)


def _sorted_top_p(logits: torch.Tensor, top_p: float, min_tokens_to_keep: int, filter_value: float) -> torch.Tensor:
    ascending, order = torch.sort(logits, descending=False, stable=True)  # [batch, vocab]
    mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)
    # A token goes when the tokens up to and including it hold no more than 1 - top_p of the mass.
    drop_sorted = mass_below <= (1 - top_p)
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, filter_value)


def transform(logits: torch.Tensor, setting: Any, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """A setting's transforms in transformers' order: temperature, then top-k, then top-p."""
    scores = logits.float()
    if setting.temperature != 1.0:
        scores = apply_temperature(scores, setting.temperature)
    scores = top_k_filter(scores, setting.top_k, min_tokens_to_keep)
    return top_p_filter(scores, setting.top_p, min_tokens_to_keep)
