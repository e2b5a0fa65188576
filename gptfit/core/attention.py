"""Masked (causal) multi-head self-attention, the one implementation every gptfit model uses.

Two paths compute the same thing:
- `fast_attention`: used for training and decoding; torch's fused `scaled_dot_product_attention`, or,
  for short windows on CPU, two batched matmuls around a softmax (faster there, see SHORT_WINDOW).
  Without a cache, in that short-window case, `CausalSelfAttention` goes straight from its fused
  projection through `short_causal_attention`, the same arithmetic with its backward written out;
- `explicit_attention`: the textbook version that builds the mask, the scores and the softmax, used
  when a module's `capture` flag is on, so that the attention probabilities can be kept and drawn.

Query position i (counted from the end of the keys when a cache holds earlier tokens) may attend to
key positions j <= i and never to a later one.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class KVCache(Protocol):
    """What attention needs of a key/value cache (transformers' DynamicCache has the same method)."""

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        ...


def causal_mask(q_len: int, k_len: int, device=None) -> torch.Tensor:
    """[q_len, k_len] bool, True where attending is allowed.

    The queries are the last q_len of the k_len positions (bottom-right alignment), so with a cache of
    k_len - q_len earlier tokens, query i sits at absolute position k_len - q_len + i.
    """
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device).unsqueeze(1) + offset
    cols = torch.arange(k_len, device=device).unsqueeze(0)
    return cols <= rows


def _full_mask(q_len: int, k_len: int, key_padding: Optional[torch.Tensor], device) -> torch.Tensor:
    """Causal mask combined with a [batch, k_len] padding mask (True = real token): [B|1, 1, Q, K]."""
    allowed = causal_mask(q_len, k_len, device)[None, None]
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, None, :].bool()
        # A padded query row would have nothing to attend to; let it see itself so softmax stays finite.
        rows = torch.arange(q_len, device=device).unsqueeze(1) + (k_len - q_len)
        allowed = allowed | (torch.arange(k_len, device=device).unsqueeze(0) == rows)[None, None]
    return allowed


def explicit_attention(
    q: torch.Tensor,  # [batch, head, query, dim]
    k: torch.Tensor,  # [batch, head, key, dim]
    v: torch.Tensor,  # [batch, head, key, dim]
    key_padding: Optional[torch.Tensor] = None,  # [batch, key], True = real token
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (output [batch, head, query, dim], probabilities [batch, head, query, key])."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [batch, head, query, key]
    allowed = _full_mask(q_len, k_len, key_padding, q.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    dropped = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    return dropped @ v, probs


# Up to this many positions, plain causal self-attention on CPU runs as two batched matmuls around a
# softmax: the fused kernel works in blocks sized for long sequences, and at 64 positions it takes about
# 1.4x as long forward and backward (1.15-1.4x over repeated measurements; 1.8x at 128 positions; at 256
# the fused kernel is faster). bench/train_throughput.py measures the effect on a training step.
SHORT_WINDOW = 128


@functools.lru_cache(maxsize=8)
def _additive_causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[length, length]: 0 where attending is allowed, -inf above the diagonal."""
    with torch.inference_mode(False):  # first built while decoding, it also serves training
        zeros = torch.zeros(length, length, dtype=dtype, device=device)
        return zeros.masked_fill_(~causal_mask(length, length, device), float("-inf"))


def _short_causal_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[batch * head, time, time] causal attention probabilities of [batch * head, time, dim] queries and keys."""
    T, D = q.shape[-2:]
    scores = torch.baddbmm(_additive_causal_mask(T, q.dtype, q.device), q, k.transpose(1, 2), alpha=1 / math.sqrt(D))
    return torch.softmax(scores, dim=-1)


def _short_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal self-attention of [batch, head, time, dim] tensors as batched matmuls (CPU, short windows)."""
    B, H, T, D = q.shape
    q, k, v = (t.reshape(B * H, T, D) for t in (q, k, v))
    probs = _short_causal_probs(q, k)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.bmm(probs, v).view(B, H, T, D)


class _PackedShortCausal(torch.autograd.Function):
    """Causal self-attention from the fused projection [batch, time, 3 * n_embd] to [batch, time, n_embd].

    The same arithmetic as `_short_causal` on the split heads, with the backward written out: the heads
    are split with one copy instead of three, the gradients of queries, keys and values are written into
    one buffer (no concatenation), and the 1/sqrt(dim) scale is applied to both at once. This makes an
    attention layer's forward and backward about 10% faster at 64 positions; bench/train_throughput.py
    measures a whole step.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n_head: int, dropout_p: float) -> torch.Tensor:
        B, T, C3 = qkv.shape
        H, D = n_head, C3 // (3 * n_head)
        device = qkv.device.type
        # Under autocast every step runs in its dtype, as the same ops would outside this function.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else qkv.dtype
        with torch.autocast(device, enabled=False):
            heads = qkv.to(dtype).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, D)
            q, k, v = heads.unbind(0)  # [batch * head, time, dim] each, contiguous
            probs = _short_causal_probs(q, k)  # [batch * head, time, time]
            keep = None
            if dropout_p > 0:
                dropped, keep = torch.native_dropout(probs, dropout_p, True)  # the draws of F.dropout
            else:
                dropped = probs
            y = torch.bmm(dropped, v)  # [batch * head, time, dim]
        ctx.save_for_backward(heads, probs, keep)
        ctx.dims, ctx.dropout_p, ctx.qkv_dtype = (B, T, H, D), dropout_p, qkv.dtype
        return y.view(B, H, T, D).transpose(1, 2).reshape(B, T, H * D)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        heads, probs, keep = ctx.saved_tensors
        (B, T, H, D), p = ctx.dims, ctx.dropout_p
        q, k, v = heads.unbind(0)
        grad_out = grad_y.to(heads.dtype).view(B, T, H, D).transpose(1, 2).reshape(B * H, T, D)
        grads = torch.empty_like(heads)  # [3, batch * head, time, dim]: queries, keys, values
        dropped = probs if keep is None else probs * keep * (1 / (1 - p))
        torch.bmm(dropped.transpose(1, 2), grad_out, out=grads[2])
        grad_probs = torch.bmm(grad_out, v.transpose(1, 2))
        if keep is not None:
            grad_probs.mul_(keep).mul_(1 / (1 - p))
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        torch.bmm(grad_scores, k, out=grads[0])
        torch.bmm(grad_scores.transpose(1, 2), q, out=grads[1])
        grads[:2].mul_(1 / math.sqrt(D))
        grad_qkv = grads.view(3, B, H, T, D).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * H * D)
        return grad_qkv.to(ctx.qkv_dtype), None, None


def short_causal_attention(qkv: torch.Tensor, n_head: int, dropout_p: float = 0.0) -> torch.Tensor:
    """[batch, time, 3 * n_embd] fused query/key/value projection -> [batch, time, n_embd] causal attention
    (CPU, up to SHORT_WINDOW positions, no padding, no cache: see `short_causal_applies`)."""
    return _PackedShortCausal.apply(qkv, n_head, dropout_p)


def short_causal_applies(q_len: int, k_len: int, device: torch.device, key_padding=None) -> bool:
    """Whether the batched-matmul kernel serves this case: plain causal self-attention, short, on CPU."""
    return key_padding is None and q_len == k_len <= SHORT_WINDOW and device.type == "cpu"


def fast_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The same output as `explicit_attention`, through the fastest kernel for the case."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    if short_causal_applies(q_len, k_len, q.device, key_padding):
        return _short_causal(q, k, v, dropout_p)
    if key_padding is not None:
        mask = _full_mask(q_len, k_len, key_padding, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if q_len == 1:
        # One new token after a cache: every earlier key is allowed, no mask needed.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
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
        self.captured: Optional[torch.Tensor] = None

    def forward(
        self,
        x: torch.Tensor,  # [batch, time, n_embd]
        cache: Optional[KVCache] = None,
        key_padding: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x)  # [batch, time, 3 * n_embd]
        dropout_p = self.dropout if self.training else 0.0
        if cache is None and not self.capture and short_causal_applies(T, T, x.device, key_padding):
            return self.resid_dropout(self.c_proj(short_causal_attention(qkv, self.n_head, dropout_p)))
        # three [batch, head, time, head_dim]
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in qkv.split(C, dim=2))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.capture:
            y, self.captured = explicit_attention(q, k, v, key_padding, dropout_p)
        else:
            y = fast_attention(q, k, v, key_padding, dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


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
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    try:
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
    finally:
        model.train(was_training)
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
