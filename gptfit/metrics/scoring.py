"""`score_sequences`: a model's next-token loss and argmax hits at every position of token sequences.

The one scoring loop behind the window losses, the canaries' losses and the grammar sentences' NLL.
Sequences of different lengths are right-padded, so every real target sees only real tokens before it
(the model is causal) and the padded targets are masked out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from gptfit.core.eval_mode import eval_mode


@dataclass
class Scores:
    """Per-target scores of n sequences; target t is token t + 1, predicted from tokens 0..t."""

    losses: torch.Tensor  # [n, time - 1] float32 nats; 0 where masked
    hits: torch.Tensor  # [n, time - 1] bool: the most probable token is the target; False where masked
    mask: torch.Tensor  # [n, time - 1] bool: a real target, not padding

    def total(self) -> torch.Tensor:
        """[n] summed loss of each sequence's targets."""
        return self.losses.sum(1)

    def mean(self) -> torch.Tensor:
        """[n] mean loss per target."""
        return self.total() / self._counts()

    def hit_rate(self) -> torch.Tensor:
        """[n] share of targets that are the model's most probable token."""
        return self.hits.sum(1).float() / self._counts()

    def _counts(self) -> torch.Tensor:
        # A sequence of one token has no target; its mean is 0, not 0 / 0.
        return self.mask.sum(1).clamp(min=1).float()  # [n]


def _right_padded(chunk: torch.Tensor | Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    if isinstance(chunk, torch.Tensor):
        return chunk
    ids = torch.full((len(chunk), max(map(len, chunk))), pad_id, dtype=torch.long)  # [b, time]
    for r, seq in enumerate(chunk):
        ids[r, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids


def score_sequences(model, sequences: torch.Tensor | Sequence[Sequence[int]], batch_size: int,
                    pad_id: int = 0) -> Scores:
    """Score `sequences` ([n, time] ids, or n lists of ids of any lengths) in eval mode, without gradients,
    `batch_size` at a time on the model's device. `pad_id` fills the right of the shorter sequences; it is
    never scored, so any token id does."""
    if isinstance(sequences, torch.Tensor):
        lengths = torch.full((len(sequences),), sequences.shape[1], dtype=torch.long)  # [n]
    else:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)  # [n]
    width = max(int(lengths.max()) - 1, 0) if len(lengths) else 0
    losses = torch.zeros(len(lengths), width)  # [n, time - 1]
    hits = torch.zeros(len(lengths), width, dtype=torch.bool)  # [n, time - 1]
    device = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(lengths), batch_size):
            ids = _right_padded(sequences[start : start + batch_size], pad_id).to(device)  # [b, t]
            if ids.shape[1] < 2:
                continue  # no targets in this batch
            targets = ids[:, 1:]  # [b, t - 1]
            logits = model(input_ids=ids[:, :-1]).logits.float()  # [b, t - 1, vocab]
            nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [b, t - 1]
            rows, cols = slice(start, start + len(ids)), slice(0, targets.shape[1])
            losses[rows, cols] = nll.cpu()
            hits[rows, cols] = (logits.argmax(-1) == targets).cpu()
    mask = torch.arange(width) < (lengths - 1)[:, None]  # [n, time - 1]
    return Scores(losses.masked_fill(~mask, 0.0), hits & mask, mask)
