"""Goldfish loss (Hans et al. 2024, train.goldfish): about 1/k of the target tokens are left out of the loss.

Token t is dropped when a hash of the h tokens before it, tokens[t - h : t], falls in 1/k of the hash range.
The choice depends on nothing but those h token ids, so every copy of a passage drops the same tokens
(after its first h): the model never sees those targets in any copy, however often the passage repeats,
and cannot reproduce it verbatim. A token with fewer than h tokens before it is never dropped. The paper
uses k = 4 and h = 13, and warns that a small h drops a token of a common phrase wherever the phrase occurs,
so that it may never be learned.

The mask is computed once over the training stream, not per training window: a window's first h tokens
have their context before the window, so a window-level mask would never drop them, and the dropped set
would depend on where the window happens to start instead of on the text.

train.goldfish.context says where a context may reach. stream: across documents, so the first h tokens of
a document are hashed with the end of the one before it, and copies of one short text planted in different
places drop different tokens there. document (given the end-of-text id as `separator`): no context holds an
end-of-text, so each document's context starts at its start and its first h tokens are never dropped, as at
the stream's start; every copy of a document then drops the same tokens, wherever it was planted.
"""

from __future__ import annotations

import numpy as np


def _finalize(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64 arithmetic wraps): every input bit moves every output bit."""
    z = (z ^ (z >> 30)) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> 27)) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> 31)


def goldfish_mask(tokens: np.ndarray, k: int, h: int, separator: int | None = None) -> np.ndarray:
    """[..., n] bool, True where goldfish loss drops the token from the loss; `tokens` [..., n] token ids
    (a stream, or rows of one: each row on its own). separator: the end-of-text id, which no context
    crosses (context=document); None: contexts run across documents (context=stream)."""
    tokens = np.asarray(tokens)
    dropped = np.zeros(tokens.shape, dtype=bool)  # [..., n]
    n = tokens.shape[-1]
    if n <= h:
        return dropped
    # A fixed odd 64-bit multiplier per context position, so that the order of the h tokens counts.
    multipliers = _finalize(np.arange(1, h + 1, dtype=np.uint64)) | np.uint64(1)  # [h]
    contexts = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.uint64), h, axis=-1)[..., :-1, :]
    # contexts[..., t - h, :] = tokens[..., t - h : t] for t = h .. n - 1: [..., n - h, h]
    hashes = _finalize(contexts @ multipliers)  # [..., n - h]: the sum wraps mod 2^64; no [n, h] product made
    dropped[..., h:] = hashes % np.uint64(k) == 0
    if separator is not None:  # a context that holds an end-of-text reaches into the document before
        ends = np.cumsum(tokens == separator, axis=-1)  # [..., n]
        ends = np.concatenate([np.zeros_like(ends[..., :1]), ends], axis=-1)  # [..., n + 1]: in tokens[..., :j]
        dropped[..., h:] &= ends[..., h:n] == ends[..., : n - h]  # none in tokens[..., t - h : t]
    return dropped


def goldfish_dropped(
    sides: list, streams: dict[str, np.ndarray], prefix: int, k: int, h: int, separator: int | None = None
) -> np.ndarray:
    """[rows] the share of each sequence's suffix tokens that the goldfish mask drops, for the per-sequence
    table (`sides`: its sides, each with `split`, `offsets` and `tokens`; `streams`: split -> its token
    stream). With prefix >= h the prefix gives every suffix token its whole context, so the mask on
    the sequence's own tokens equals the stream's, and every copy of a planted sequence drops the same ones.
    With prefix < h the first h - prefix suffix tokens' context starts before the sequence: they are read
    from the stream's mask where the sequence sits in one (a planted one: at its first copy; other copies
    may differ there), and count as kept where it sits in none (held-aside ones, data.subset's non-members).
    separator: as in goldfish_mask, the training's (context=document: the end-of-text id)."""
    masks = {split: goldfish_mask(stream, k, h, separator) for split, stream in streams.items()} if prefix < h else {}
    parts = []
    for side in sides:
        tokens = side.tokens.numpy()  # [n, L]
        dropped = goldfish_mask(tokens, k, h, separator)[:, prefix:]  # [n, suffix]
        at = side.offsets >= 0
        if side.split in masks and at.any():
            index = side.offsets[at, None] + np.arange(prefix, tokens.shape[1])[None, :]  # [placed, suffix]
            dropped[at] = masks[side.split][index]
        parts.append(dropped.mean(1))
    return np.concatenate(parts)
