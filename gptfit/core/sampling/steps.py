"""Steppers: "given the tokens so far, the next-token logits". The loops do not know which one runs.

- `CachedSteps` serves a model that decodes over a `KVCache` of its own: it has `new_kv_cache(batch,
  capacity)` and `decode_step(input_ids, cache, position_ids, attention_mask) -> [batch, vocab]` logits
  of the last position (gptfit's GPT does: its step runs the model's own modules, so whatever changes
  a module, an adapter, a hook or a patched layer, changes decoding too).
- `WindowSteps` serves any causal LM without a cache: every step runs the last `context` tokens.
"""

from __future__ import annotations

import inspect

import torch

from gptfit.core.sampling.cache import KVCache


def decodes_with_cache(model) -> bool:
    """Whether a model serves `CachedSteps`: decided by what it offers, never by comparing outputs."""
    return callable(getattr(model, "decode_step", None)) and callable(getattr(model, "new_kv_cache", None))


def positions_of(mask: torch.Tensor) -> torch.LongTensor:
    """Position ids that skip left padding, as `generate` makes them: [rows, time]."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class CachedSteps:
    """A model's own decode step over its KVCache; at the context length the window slides and the cache is rebuilt.

    Beam search: a new beam extends an old one, so its cache must hold the old beam's history. Instead
    of moving every row of the cache (an index_select of all of it at each step: a quarter of beam
    search's time), a beam takes over its parent's cache row ("slot"); only a second child of the same
    parent copies it, into the slot of a beam that nobody extends. The model then runs on the rows in
    slot order, and the logits are put back in beam order.
    """

    def __init__(self, model, context: int, rows: int, total_length: int):
        self.model, self.context = model, context
        self.cache: KVCache = model.new_kv_cache(rows, min(context, total_length))
        self.next_position: torch.Tensor | None = None  # [rows, 1] only with padding
        self.slots: list[int] | None = None  # cache row of each row; None: the same row
        self.order: tuple[torch.Tensor, torch.Tensor] | None = None  # (row of each slot, slot of each row)

    def _forward(self, ids, mask, positions) -> torch.Tensor:
        if self.order is not None:
            row_of_slot, slot_of_row = self.order
            ids = ids[row_of_slot]
            mask = mask[row_of_slot] if mask is not None else None
            positions = positions[row_of_slot] if positions is not None else None
        logits = self.model.decode_step(ids, self.cache, positions, mask)  # [rows, vocab]
        return logits[self.order[1]] if self.order is not None else logits

    def prefill(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Fill the cache from the last `context` tokens ([rows, time]); the next-token logits."""
        self.cache.reset()
        self.slots = self.order = None
        window = tokens[:, -self.context :]
        positions = None
        if mask is not None:
            mask = mask[:, -self.context :]
            positions = positions_of(mask)
            self.next_position = positions[:, -1:] + 1
        return self._forward(window, mask, positions)

    def step(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """tokens: [rows, time], the newest last. Only that one is run, unless the cache is full."""
        length = self.cache.get_seq_length() + 1
        if length > self.cache.capacity:
            return self.prefill(tokens, mask)
        positions = None
        if mask is not None:
            mask, positions = mask[:, -length:], self.next_position
            self.next_position = positions + 1
        return self._forward(tokens.narrow(1, tokens.shape[1] - 1, 1), mask, positions)  # the newest: [rows, 1]

    def reorder(self, parents: torch.LongTensor) -> None:
        """Row i now extends old row parents[i]."""
        if self.next_position is not None:
            self.next_position = self.next_position.index_select(0, parents)
        n = len(parents)
        old = self.slots or list(range(n))
        wanted = [old[p] for p in parents.tolist()]
        slots, taken = [-1] * n, [False] * n
        for i, s in enumerate(wanted):  # the first child of a beam keeps its slot
            if not taken[s]:
                slots[i], taken[s] = s, True
        free = [s for s in range(n) if not taken[s]]
        for i, s in enumerate(wanted):  # the others copy it into a slot that no beam extends
            if slots[i] < 0:
                slots[i] = free.pop()
                self.cache.copy_row(s, slots[i])
        self.slots = slots
        if slots == list(range(n)):
            self.order = None
        else:
            slot_of_row = torch.tensor(slots, device=parents.device)
            self.order = (torch.argsort(slot_of_row), slot_of_row)


class WindowSteps:
    """Any causal LM, no cache: every step runs the last `context` tokens (slow, but never too long)."""

    def __init__(self, model, context: int | None):
        self.model, self.context = model, context
        params = inspect.signature(model.forward).parameters
        self.keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def prefill(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.context:
            tokens = tokens[:, -self.context :]
            mask = mask[:, -self.context :] if mask is not None else None
        extra = dict(attention_mask=mask, position_ids=positions_of(mask)) if mask is not None else {}
        return self.model(input_ids=tokens, use_cache=False, **extra, **self.keep).logits[:, -1]

    step = prefill

    def reorder(self, rows: torch.LongTensor) -> None:
        pass  # the tokens carry everything
