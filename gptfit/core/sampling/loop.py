"""Greedy decoding and sampling: one token per row per step, from any stepper (see steps.py)."""

from __future__ import annotations

import math

import torch

from gptfit.core.sampling.results import Step
from gptfit.core.sampling.transforms import transform


def top_candidates(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(scores.float(), dim=-1)
    values, ids = torch.topk(probs, min(n, probs.shape[-1]))
    return ids, values


def one_at_a_time(steps, prompt, mask, s, sampling: bool, gen, eos, min_new: int, trace: bool, top_n: int):
    """Greedy or sampling, one token per row per step. Returns (sequences [rows, prompt + new], trace)."""
    rows, prompt_len = prompt.shape
    seqs = prompt.new_empty(rows, prompt_len + s.max_new_tokens)
    seqs[:, :prompt_len] = prompt
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(rows, s.max_new_tokens)], dim=1)
    alive = torch.ones(rows, dtype=torch.bool, device=prompt.device)
    record = []
    logits = steps.prefill(prompt, mask[:, :prompt_len] if mask is not None else None)
    end = prompt_len
    for t in range(s.max_new_tokens):
        scores = logits.float()  # [rows, vocab]
        if eos is not None and t < min_new:
            scores = scores.index_fill(1, eos, -math.inf)
        if sampling:
            scores = transform(scores, s)
            next_ids = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen).squeeze(1)
        else:
            next_ids = scores.argmax(dim=-1)
        if eos is not None:
            next_ids = torch.where(alive, next_ids, eos[0])  # a finished row is padded with end-of-text
        seqs.select(1, end).copy_(next_ids)  # select/narrow: the views of [:, end], at a third of the cost
        end += 1
        if trace:
            record.append(Step(t, next_ids.clone(), *top_candidates(scores, top_n)))
        if eos is not None:
            alive &= ~torch.isin(next_ids, eos)
            if not alive.any():
                break
        if t + 1 < s.max_new_tokens:
            logits = steps.step(seqs.narrow(1, 0, end), mask[:, :end] if mask is not None else None)
    return seqs[:, :end], record
