"""Causal self-attention for short windows on CPU: batched matmuls around a softmax, and a variant with
its backward written out. Kept apart from the textbook code in attention.py, which it must equal
(tests/test_attention.py checks values and every gradient).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from gptfit.core.masks import causal_mask

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


def short_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal self-attention of [batch, head, time, dim] tensors as batched matmuls (CPU, short windows)."""
    B, H, T, D = q.shape
    q, k, v = (t.reshape(B * H, T, D) for t in (q, k, v))
    probs = _short_causal_probs(q, k)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.bmm(probs, v).view(B, H, T, D)


class _PackedShortCausal(torch.autograd.Function):
    """Causal self-attention from the fused projection [batch, time, 3 * n_embd] to [batch, time, n_embd].

    The same arithmetic as `short_causal` on the split heads, with the backward written out: the heads
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
