"""Masked (causal) multi-head self-attention, the one implementation every gptfit model uses.

Two paths compute the same thing:
- `fast_attention`: used for training and decoding; torch's fused `scaled_dot_product_attention`, or,
  for short windows on CPU, two batched matmuls around a softmax (attention_cpu.py: faster there).
  Without a cache, in that short-window case, `CausalSelfAttention` goes straight from its fused
  projection through `short_causal_attention`, the same arithmetic with its backward written out;
- `explicit_attention`: the textbook version that builds the mask, the scores and the softmax, used
  when a module's `capture` flag is on, so that the attention probabilities can be kept and drawn.

Query position i (counted from the end of the keys when a cache holds earlier tokens) may attend to
key positions j <= i and never to a later one.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gptfit.core.attention_cpu import short_causal, short_causal_applies, short_causal_attention
from gptfit.core.eval_mode import eval_mode
from gptfit.core.masks import causal_mask, full_mask


class KVCache(Protocol):
    """What attention needs of a key/value cache (transformers' DynamicCache has the same method)."""

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs): ...


def explicit_attention(
    q: torch.Tensor,  # [batch, head, query, dim]
    k: torch.Tensor,  # [batch, head, key, dim]
    v: torch.Tensor,  # [batch, head, key, dim]
    key_padding: torch.Tensor | None = None,  # [batch, key], True = real token
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (output [batch, head, query, dim], probabilities [batch, head, query, key])."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [batch, head, query, key]
    allowed = full_mask(q_len, k_len, key_padding, q.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    dropped = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    return dropped @ v, probs


def fast_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The same output as `explicit_attention`, through the fastest kernel for the case."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    if q_len == 1 and key_padding is None:
        # One new token (a decoding step): every earlier key is allowed, no mask needed. Checked first,
        # since decoding makes this call once per layer and token.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if short_causal_applies(q_len, k_len, q.device, key_padding):
        return short_causal(q, k, v, dropout_p)
    if key_padding is not None:
        mask = full_mask(q_len, k_len, key_padding, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    mask = causal_mask(q_len, k_len, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection.

    Set `capture = True` to route through the explicit path and keep the probabilities in
    `captured` ([batch, head, query, key]); it is off during training.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, layer_idx: int):
        super().__init__()
        self.n_head, self.head_dim, self.layer_idx = n_head, n_embd // n_head, layer_idx
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.capture = False
        self.captured: torch.Tensor | None = None

    def forward(
        self,
        x: torch.Tensor,  # [batch, time, n_embd]
        cache: KVCache | None = None,
        key_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        m = self._modules  # not self.c_attn: a dict read instead of Module.__getattr__ (decoding's hot path)
        qkv = m["c_attn"](x)  # [batch, time, 3 * n_embd]
        dropout_p = self.dropout if self.training else 0.0
        if cache is None and not self.capture and short_causal_applies(T, T, x.device, key_padding):
            y = short_causal_attention(qkv, self.n_head, dropout_p)
        else:
            # three [batch, head, time, head_dim] views
            q, k, v = qkv.view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            if cache is not None:
                k, v = cache.update(k, v, self.layer_idx)
            if self.capture:
                y, self.captured = explicit_attention(q, k, v, key_padding, dropout_p)
            else:
                y = fast_attention(q, k, v, key_padding, dropout_p)
            y = y.transpose(1, 2).reshape(B, T, C)
        y = m["c_proj"](y)
        return m["resid_dropout"](y) if self.training else y


# ----------------------------------------------------------------------------------------------------
# Capturing the attention of a whole model


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over queries of the entropy (nats) of each attention row: [..., query, key] -> [...]."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean(-1)


@torch.no_grad()
def attention_maps(model, input_ids: torch.Tensor) -> torch.Tensor:
    """[layers, heads, query, key] attention probabilities of a batch of one, in eval mode.

    gptfit's models are captured through the explicit path of `CausalSelfAttention` (switched on only
    for this call). Hugging Face models return their weights with `output_attentions=True`, which only
    the eager attention provides: a model loaded with SDPA is switched to eager here.
    """
    return attention_maps_batch(model, input_ids.reshape(1, -1))[0]


@torch.no_grad()
def attention_maps_batch(model, input_ids: torch.Tensor) -> torch.Tensor:
    """[batch, layers, heads, query, key] for equal-length sequences."""
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    with eval_mode(model):  # attention dropout would make rows not sum to 1
        if hasattr(model, "set_capture"):
            model.set_capture(True)
            try:
                model(input_ids=input_ids)
                maps = [block.attn.captured for block in model.transformer.h]  # each [batch, head, q, k]
            finally:
                model.set_capture(False)
        else:
            if getattr(model.config, "_attn_implementation", "eager") != "eager":
                model.set_attn_implementation("eager")  # SDPA silently returns no weights
            maps = list(model(input_ids=input_ids, output_attentions=True).attentions or [])
            if not maps:
                raise ValueError("the model returned no attention weights; load it with attn_implementation='eager'")
    return torch.stack(maps, dim=1).float().cpu()


def head_entropy(maps: torch.Tensor) -> torch.Tensor:
    """[layers, heads] mean attention entropy (nats) of each head."""
    return _entropy(maps)


def copying_score(maps: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """[layers, heads] attention paid to the token after an earlier occurrence of the current token.

    For query i with token t, the targets are the positions j <= i whose previous token j - 1 is an
    earlier t: where an induction (copying) head looks. Averaged over the queries that have a target;
    zero when no token repeats.
    """
    T = len(tokens)
    target = torch.zeros(T, T)
    for i in range(T):
        for j in range(1, i + 1):
            if tokens[j - 1] == tokens[i] and j - 1 < i:
                target[i, j] = 1.0
    rows = target.sum(-1) > 0
    if not rows.any():
        return torch.zeros(maps.shape[:2])
    return (maps * target).sum(-1)[..., rows].mean(-1)
