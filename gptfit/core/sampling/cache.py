"""A preallocated key/value cache for decoding: one buffer for every layer, written in place."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer in one preallocated buffer: [layer, 2, batch, head, capacity, head_dim].

    `update` writes the new positions in place and returns views of everything so far, so a decoding
    step allocates nothing here (transformers' DynamicCache concatenates: it copies the whole cache at
    every step). Beam search moves rows with `copy_row` (steps.CachedSteps); `reorder` (one
    `index_select` into a spare buffer) is transformers' reorder, kept for callers of that protocol.
    """

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_head: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        self.buffer = torch.empty(n_layer, 2, batch, n_head, capacity, head_dim, dtype=dtype, device=device)
        self.spare: torch.Tensor | None = None  # made on the first reorder
        self.lengths = [0] * n_layer
        self.capacity = capacity
        self._views()

    def _views(self) -> None:
        # Per layer: [batch, head, capacity, head_dim]. Indexed, not unbound: unbind's views refuse in-place writes.
        self.keys = [self.buffer[i, 0] for i in range(self.buffer.shape[0])]
        self.values = [self.buffer[i, 1] for i in range(self.buffer.shape[0])]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append [batch, head, time, head_dim] keys and values; return all of this layer's so far."""
        start = self.lengths[layer_idx]
        end = start + key.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KVCache holds {self.capacity} positions; {end} were asked for")
        k, v = self.keys[layer_idx], self.values[layer_idx]
        # narrow, not [:, :, start:end]: the same views at a third of the cost, once per layer and token
        k.narrow(2, start, end - start).copy_(key)
        v.narrow(2, start, end - start).copy_(value)
        self.lengths[layer_idx] = end
        return k.narrow(2, 0, end), v.narrow(2, 0, end)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        """Row i becomes old row beam_idx[i] (beam search keeps the beams it extends)."""
        n = max(self.lengths)
        if self.buffer.requires_grad:
            self.buffer = self.buffer.index_select(2, beam_idx)  # autograd has no out= variant
        else:
            if self.spare is None:
                self.spare = torch.empty_like(self.buffer)
            torch.index_select(self.buffer[..., :n, :], 2, beam_idx, out=self.spare[..., :n, :])
            self.buffer, self.spare = self.spare, self.buffer
        self._views()

    reorder_cache = reorder  # transformers' name for the same operation

    def copy_row(self, src: int, dst: int) -> None:
        """Row dst takes row src's keys and values (a cheaper reorder when most rows stay, see steps.CachedSteps)."""
        n = max(self.lengths)
        self.buffer[:, :, dst, :, :n].copy_(self.buffer[:, :, src, :, :n])

    def reset(self) -> None:
        self.lengths = [0] * len(self.lengths)
