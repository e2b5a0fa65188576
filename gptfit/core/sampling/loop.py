"""Greedy decoding and sampling: one token per row per step, from any stepper (see steps.py).

The rows may come in blocks (`Block`), each under a setting of its own: greedy and sampled settings then
share every forward pass, and each block draws from its own generator, so its draws are the ones it
would make decoded alone with that generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gptfit.core.decoding_settings import DecodingConfig
from gptfit.core.sampling.results import Step
from gptfit.core.sampling.transforms import transform


@dataclass
class Block:
    """Rows decoded under one setting: greedy (`sampling` False) or sampled with the setting's transforms."""

    rows: slice
    setting: DecodingConfig
    sampling: bool
    gen: torch.Generator


def top_candidates(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(scores.float(), dim=-1)
    values, ids = torch.topk(probs, min(n, probs.shape[-1]))
    return ids, values


def _next_tokens(scores: torch.Tensor, blocks: list[Block], trace: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([rows] each row's next token, and with `trace` [rows, vocab] the scores it was chosen from,
    after its setting's transforms)."""
    chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)  # [rows]
    shown = []
    for block in blocks:
        part = scores[block.rows]  # [block rows, vocab]
        if block.sampling:
            part = transform(part, block.setting)
            chosen[block.rows] = torch.multinomial(torch.softmax(part, dim=-1), 1, generator=block.gen).squeeze(1)
        else:
            chosen[block.rows] = part.argmax(dim=-1)
        shown.append(part)
    if not trace:
        return chosen, None
    return chosen, shown[0] if len(shown) == 1 else torch.cat(shown)


def one_at_a_time(steps, prompt, mask, blocks: list[Block], max_new: int, eos, min_new: int, trace: bool, top_n: int):
    """Greedy or sampling, one token per row per step, every block of rows under its own setting.
    Returns (sequences [rows, prompt + new], trace); a row that ended is padded with end-of-text until
    every row has ended."""
    rows, prompt_len = prompt.shape
    covered = [r for block in blocks for r in range(rows)[block.rows]]
    assert covered == list(range(rows)), "the blocks must cover the rows in order"
    seqs = prompt.new_empty(rows, prompt_len + max_new)  # [rows, prompt + new]
    seqs[:, :prompt_len] = prompt
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(rows, max_new)], dim=1)
    alive = torch.ones(rows, dtype=torch.bool, device=prompt.device)
    record = []
    logits = steps.prefill(prompt, mask[:, :prompt_len] if mask is not None else None)
    end = prompt_len
    for t in range(max_new):
        scores = logits.float()  # [rows, vocab]
        if eos is not None and t < min_new:
            scores = scores.index_fill(1, eos, -math.inf)
        next_ids, shown = _next_tokens(scores, blocks, trace)
        if eos is not None:
            next_ids = torch.where(alive, next_ids, eos[0])  # a finished row is padded with end-of-text
        seqs.select(1, end).copy_(next_ids)  # select/narrow: the views of [:, end], at a third of the cost
        end += 1
        if trace:
            record.append(Step(t, next_ids.clone(), *top_candidates(shown, top_n)))
        if eos is not None:
            alive &= ~torch.isin(next_ids, eos)
            if not alive.any():
                break
        if t + 1 < max_new:
            logits = steps.step(seqs.narrow(1, 0, end), mask[:, :end] if mask is not None else None)
    return seqs[:, :end], record
