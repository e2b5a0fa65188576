"""Exposure of planted canaries (Carlini et al. 2019): how far the secret stands out among its alternatives.

exposure = log2 |R| - log2 rank, where R is the space of secrets of the canary's format and rank is
the secret's place (1 = most likely) when every candidate is ranked by the model's loss. Only a sample
of R is scored; the rank is extrapolated to the whole space as in the paper: the share of sampled
candidates that beat the secret, times |R| - 1, plus one.
"""

from __future__ import annotations

import math

import numpy as np

from gptfit.data.canaries import Canary
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.scoring import score_sequences


def exposure(secret_loss: float, candidate_losses: np.ndarray, space_size: int) -> float:
    candidate_losses = np.asarray(candidate_losses, dtype=np.float64)
    beaten_by = float((candidate_losses < secret_loss).sum()) + 0.5 * float((candidate_losses == secret_loss).sum())
    rank = 1.0 + beaten_by * (space_size - 1) / max(len(candidate_losses), 1)
    return math.log2(space_size) - math.log2(rank)


def sequence_losses(model, texts: list[str], tokenizer, eot_id: int, batch_size: int = 256) -> np.ndarray:
    """Total next-token loss (nats) of each text, read as a document: after an end-of-text token."""
    encoded = [[eot_id] + tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return score_sequences(model, encoded, batch_size, pad_id=eot_id).total().numpy()


def canary_exposures(model, canaries: list[Canary], tokenizer, eot_id: int, candidates: int, seed: int) -> dict:
    row = {}
    for c in canaries:
        texts = [c.secret, *c.candidates(candidates, seed)]
        losses = sequence_losses(model, texts, tokenizer, eot_id)
        row[f"canary/{c.name}/exposure"] = exposure(losses[0], losses[1:], c.space_size)
    return row


class Canaries(Measure):
    """canary/<name>/exposure of every planted canary (data.canaries), at the memorization cadence."""

    keys = ("canary/<name>/exposure",)
    when = When.TABLE

    def __init__(self, setup: Setup):
        self.canaries, self.tokenizer, self.eot_id = setup.corpus.canaries, setup.tokenizer, setup.corpus.eot_id
        self.candidates, self.seed = setup.eval.canary_candidates, setup.split_seed

    def __call__(self, ev: Evaluation) -> dict:
        return canary_exposures(ev.model, self.canaries, self.tokenizer, self.eot_id, self.candidates, self.seed)


def build(setup: Setup) -> Canaries | None:
    return Canaries(setup) if setup.corpus.canaries else None
