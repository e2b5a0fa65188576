"""What an unlearning method is, and the two likelihoods every method is written in.

A step's batch holds windows of the retained training text (`input_ids`, `labels`: the run's own windows,
which never hold the forget set) and as many sequences of the forget set (`forget_ids`). A method turns one
batch into a loss; the Trainer does the rest (optimizer, schedule, clipping, checkpoints), as in any run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gptfit.config.unlearn import UnlearnConfig


def mean_nll(model, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The mean next-token negative log-likelihood of `tokens` ([batch, length]), over the labels not ignored."""
    return model(input_ids=tokens, labels=tokens if labels is None else labels).loss


def sequence_log_prob(model, tokens: torch.Tensor) -> torch.Tensor:
    """[batch] log p(tokens[1:] | tokens[0]) of each sequence: the sum over its predicted tokens."""
    logits = model(input_ids=tokens).logits[:, :-1].float()  # [batch, length - 1, vocab]
    log_probs = F.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)  # [batch, length - 1]
    return log_probs.sum(dim=1)


class Method:
    """One unlearning method. `prepare` runs once before the first step (and again on resume, from the same
    starting model, so a resumed run unlearns as an uninterrupted one would); `loss` is one batch's loss."""

    # Whether `prepare` reads the starting model (NPO's reference, localize's attribution): only then is a
    # frozen copy of it loaded.
    needs_start = False

    def __init__(self, unlearn: UnlearnConfig):
        self.strength = unlearn.strength  # the methods that have a knob of their own read it

    def prepare(self, model, start, forget: torch.Tensor, retain: torch.Tensor) -> None:
        """`start`: the starting model, frozen (None unless `needs_start`); `forget` and `retain` ([n, length]):
        the sets, for the methods that look at them first."""

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError
