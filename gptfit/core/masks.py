"""Which key positions each query may attend to: the causal mask, alone or with left padding."""

from __future__ import annotations

import torch


def causal_mask(q_len: int, k_len: int, device=None) -> torch.Tensor:
    """[q_len, k_len] bool, True where attending is allowed.

    The queries are the last q_len of the k_len positions (bottom-right alignment), so with a cache of
    k_len - q_len earlier tokens, query i sits at absolute position k_len - q_len + i.
    """
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device).unsqueeze(1) + offset
    cols = torch.arange(k_len, device=device).unsqueeze(0)
    return cols <= rows


def full_mask(q_len: int, k_len: int, key_padding: torch.Tensor | None, device) -> torch.Tensor:
    """Causal mask combined with a [batch, k_len] padding mask (True = real token): [B|1, 1, Q, K]."""
    allowed = causal_mask(q_len, k_len, device)[None, None]
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, None, :].bool()
        # A padded query row would have nothing to attend to; let it see itself so softmax stays finite.
        rows = torch.arange(q_len, device=device).unsqueeze(1) + (k_len - q_len)
        allowed = allowed | (torch.arange(k_len, device=device).unsqueeze(0) == rows)[None, None]
    return allowed
