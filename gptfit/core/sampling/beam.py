"""Beam search, a port of transformers' `GenerationMixin._beam_search`: the same tensor operations in the
same order, so it picks the same tokens.

The running beams ([batch, beams]) extend one token per step; of all beams x vocab continuations the
best 2 * beams (more with several eos ids) are kept, so that enough survive when some end. Those that
end (eos or the last step) are scored sum log-probs / new_tokens ** length_penalty and compete for the
`beams` finished slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptfit.core.sampling.loop import top_candidates
from gptfit.core.sampling.results import Step
from gptfit.core.sampling.transforms import transform

# transformers' "impossible" beam score. Used the same way (added, never assigned) so that the
# float32 rounding, and hence the tie-breaking of topk, is the same as in `generate`.
IMPOSSIBLE = -1.0e9


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[b, idx[b, j], ...] for [batch, beams, ...] tensors (transformers' `_gather_beams`)."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


@dataclass
class Beams:
    """The running and the finished beams of a batch of prompts."""

    running: torch.Tensor  # [batch, beams, max_len] token ids
    running_scores: torch.Tensor  # [batch, beams] sum of log-probs
    finished: torch.Tensor  # [batch, beams, max_len]
    finished_scores: torch.Tensor  # [batch, beams] length-penalized
    finished_len: torch.Tensor  # [batch, beams] new tokens of each finished beam
    is_finished: torch.Tensor  # [batch, beams] bool
    improvable: torch.Tensor  # [batch, 1] bool: a running beam may still beat the worst finished one

    @classmethod
    def start(cls, prompt: torch.Tensor, nb: int, max_len: int, fill: int) -> Beams:
        batch, prompt_len = prompt.shape
        dev = prompt.device
        running = torch.full((batch, nb, max_len), fill, dtype=torch.long, device=dev)
        running[:, :, :prompt_len] = prompt[:, None]
        running_scores = torch.zeros(batch, nb, device=dev)
        running_scores[:, 1:] = IMPOSSIBLE  # all beams start equal: let only the first one propose
        return cls(
            running,
            running_scores,
            running.clone(),
            torch.full((batch, nb), IMPOSSIBLE, device=dev),
            torch.zeros(batch, nb, dtype=torch.long, device=dev),
            torch.zeros(batch, nb, dtype=torch.bool, device=dev),
            torch.ones(batch, 1, dtype=torch.bool, device=dev),
        )


def _candidates(total: torch.Tensor, keep: int, sampling: bool, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """The top `keep` continuations over all beams ([batch, beams * vocab] scores): (scores, flat index).
    With sampling they are drawn without replacement, then sorted."""
    if not sampling:
        return torch.topk(total, keep)  # [batch, keep]
    idx = torch.multinomial(F.softmax(total, dim=-1), keep, generator=gen)
    cand_scores = torch.gather(total, 1, idx)
    cand_scores, order = cand_scores.sort(dim=-1, descending=True)
    return cand_scores, idx.gather(-1, order)


def _finish(b: Beams, cand_seqs, cand_scores, cand_token, hits, top_mask, new_len: int, lp: float, early: bool) -> None:
    """The continuations that ended compete with the finished beams for the `beams` slots."""
    nb = b.finished.shape[1]
    just_finished = hits & top_mask[None, :]
    fin_scores = cand_scores / (new_len**lp)
    fin_scores += (torch.all(b.is_finished, dim=-1, keepdim=True) & early).to(torch.float32) * IMPOSSIBLE
    fin_scores += (~b.improvable).to(torch.float32) * IMPOSSIBLE
    fin_scores += (~just_finished) * IMPOSSIBLE
    merged_scores = torch.cat((b.finished_scores, fin_scores), dim=1)
    best = torch.topk(merged_scores, k=nb)[1]
    b.finished = _take(torch.cat((b.finished, cand_seqs), dim=1), best)
    b.finished_scores = _take(merged_scores, best)
    cand_len = torch.full_like(cand_token, new_len)
    b.finished_len = _take(torch.cat((b.finished_len, cand_len), dim=1), best)
    b.is_finished = _take(torch.cat((b.is_finished, just_finished), dim=1), best)


def _may_continue(b: Beams, hits: torch.Tensor, new_len: int, lp: float, early: bool) -> bool:
    """Whether any running beam can still beat the worst finished one (transformers' heuristic)."""
    best_running = b.running_scores[:, :1] / (new_len**lp)
    worst_finished = torch.where(b.is_finished, torch.min(b.finished_scores, dim=1, keepdim=True)[0], IMPOSSIBLE)
    b.improvable = b.improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
    open_beams = ~(torch.all(b.is_finished) & early)
    return bool(torch.any(b.improvable) & open_beams & ~torch.all(hits))


def beam_search(
    steps, prompt, mask, s, sampling: bool, gen, eos: torch.Tensor | None, min_new: int, trace: bool, top_n: int
):
    """Beam search of `s.num_beams` beams from `prompt` ([batch, prompt]); returns (sequences, scores, trace)."""
    batch, prompt_len = prompt.shape
    nb, lp, early = s.num_beams, s.length_penalty, bool(s.early_stopping)
    max_len = prompt_len + s.max_new_tokens
    dev = prompt.device
    keep = max(2, 1 + (len(eos) if eos is not None else 0)) * nb
    top_mask = torch.arange(keep, device=dev) < nb  # only the best `nb` continuations may finish
    b = Beams.start(prompt, nb, max_len, int(eos[0]) if eos is not None else 0)
    offsets = torch.arange(batch, device=dev)[:, None] * nb
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(batch, s.max_new_tokens)], 1).repeat_interleave(nb, dim=0)
    min_keep = (len(eos) if eos is not None else 1) + 1  # transformers' min_tokens_to_keep for beam sampling
    record = []

    logits = steps.prefill(
        b.running[:, :, :prompt_len].reshape(batch * nb, prompt_len), mask[:, :prompt_len] if mask is not None else None
    )
    for cur_len in range(prompt_len, max_len):
        if cur_len > prompt_len:
            logits = steps.step(
                b.running[:, :, :cur_len].reshape(batch * nb, cur_len), mask[:, :cur_len] if mask is not None else None
            )
        log_probs = F.log_softmax(logits.float(), dim=-1)  # [batch * beams, vocab]
        if eos is not None and cur_len - prompt_len < min_new:
            log_probs = log_probs.index_fill(1, eos, -math.inf)
        if sampling:
            log_probs = transform(log_probs, s, min_keep)
        vocab = log_probs.shape[-1]
        total = (log_probs.view(batch, nb, vocab) + b.running_scores[:, :, None]).reshape(batch, nb * vocab)
        cand_scores, idx = _candidates(total, keep, sampling, gen)
        cand_beam, cand_token = idx // vocab, idx % vocab
        cand_seqs = _take(b.running, cand_beam)  # [batch, keep, max_len]
        cand_seqs[:, :, cur_len] = cand_token
        ends = cur_len + 1 >= max_len
        hits = torch.isin(cand_token, eos) if eos is not None else torch.zeros_like(cand_token, dtype=torch.bool)
        if ends:
            hits = torch.ones_like(hits)

        # The best continuations that did not end run on.
        run_scores = cand_scores + hits.to(torch.float32) * IMPOSSIBLE
        chosen = torch.topk(run_scores, k=nb)[1]  # [batch, beams]
        b.running, b.running_scores = _take(cand_seqs, chosen), _take(run_scores, chosen)
        parents = _take(cand_beam, chosen)
        if trace:
            # At the last step every continuation ends and none runs on: show the best ones instead.
            shown = torch.arange(nb, device=dev).expand(batch, nb) if ends else chosen
            record.append(
                Step(
                    cur_len - prompt_len,
                    _take(cand_token, shown),
                    *top_candidates(log_probs, top_n),
                    parents=_take(cand_beam, shown),
                    scores=_take(cand_scores, shown),
                )
            )
        new_len = cur_len + 1 - prompt_len
        _finish(b, cand_seqs, cand_scores, cand_token, hits, top_mask, new_len, lp, early)
        if ends:
            break
        steps.reorder((parents + offsets).reshape(-1))
        if not _may_continue(b, hits, new_len, lp, early):
            break

    n = s.num_return_sequences
    sequences = b.finished[:, :n].reshape(batch * n, max_len)
    length = prompt_len + int(b.finished_len[:, :n].max())
    return sequences[:, :length], b.finished_scores[:, :n].reshape(-1), record
