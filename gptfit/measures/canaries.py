"""Exposure of planted canaries (Carlini et al. 2019): how far the secret stands out among its alternatives.

exposure = log2 |R| - log2 rank, where R is the space of secrets of the canary's format and rank is the
secret's place (1 = most likely) when every filling of the format is ranked by the model's loss. Two ways to
get the rank, as in the paper:
- enumerated: every filling scored (exact; at the last evaluation, for spaces of at most 10^6 fillings,
  `eval.canary_rank`);
- skew-normal: a skew-normal fitted to the losses of `eval.canary_candidates` sampled fillings, the rank read
  from its CDF at the secret's loss (rank = |R| F(loss), at least 1), so the estimate is continuous over the
  whole range instead of jumping from log2 |R| to about log2 |R| - log2(|R| / candidates) when one sampled
  candidate beats the secret.
The last evaluation also lists every canary in summary.json (`canaries`: name, secret, rank, exposure, how
the rank was found) so that anyone can recheck them.
"""

from __future__ import annotations

import math
import time

import numpy as np

from gptfit.config.evaluation import MAX_ENUMERATED
from gptfit.data.canaries import SLOT, Canary
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.scoring import score_sequences


def exposure(rank: float, space_size: int) -> float:
    return math.log2(space_size) - math.log2(rank)


def enumerated_rank(secret_loss: float, other_losses: np.ndarray) -> float:
    """The secret's rank among every filling: 1 + those with a lower loss (a tie counts half)."""
    other_losses = np.asarray(other_losses, dtype=np.float64)
    return 1.0 + float((other_losses < secret_loss).sum()) + 0.5 * float((other_losses == secret_loss).sum())


def skew_normal_rank(secret_loss: float, candidate_losses: np.ndarray, space_size: int) -> float:
    """The secret's rank in the whole space, from a skew-normal fitted to sampled fillings' losses."""
    from scipy.stats import skewnorm  # the fit alone needs scipy

    shape, loc, scale = skewnorm.fit(np.asarray(candidate_losses, dtype=np.float64))
    log_share = float(skewnorm.logcdf(secret_loss, shape, loc, scale))  # ln F: exact far into the tail
    return max(1.0, space_size * math.exp(log_share))


def sequence_losses(model, texts: list[str], tokenizer, eot_id: int, batch_size: int = 256) -> np.ndarray:
    """Total next-token loss (nats) of each text, read as a document: after an end-of-text token."""
    encoded = [[eot_id, *ids] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return score_sequences(model, encoded, batch_size, pad_id=eot_id).total().numpy()


def every_filling(c: Canary) -> list[str]:
    slots = c.format.count(SLOT)
    return [c.fill(str(i).zfill(slots)) for i in range(c.space_size)]


class Canaries(Measure):
    """canary/<name>/exposure and canary/<name>/rank of every planted canary (data.canaries), at the
    memorization cadence; enumerated at the last evaluation where `eval.canary_rank` allows."""

    keys = ("canary/<name>/exposure", "canary/<name>/rank")
    when = When.TABLE

    def __init__(self, setup: Setup):
        self.canaries, self.tokenizer, self.eot_id = setup.corpus.canaries, setup.tokenizer, setup.corpus.eot_id
        self.candidates, self.seed = setup.eval.canary_candidates, setup.split_seed
        self.how, self.batch_size = setup.eval.canary_rank, setup.eval.batch_size

    def enumerates(self, c: Canary, final: bool) -> bool:
        return self.how != "skew_normal" and final and c.space_size <= MAX_ENUMERATED

    def __call__(self, ev: Evaluation) -> dict:
        row, listed = {}, []
        for c in self.canaries:
            started = time.time()
            if self.enumerates(c, ev.final):
                texts = every_filling(c)
                losses = self.losses(ev.model, texts)
                secret = texts.index(c.secret)
                rank, method = enumerated_rank(losses[secret], np.delete(losses, secret)), "enumerated"
            else:
                losses = self.losses(ev.model, [c.secret, *c.candidates(self.candidates, self.seed)])
                rank, method = skew_normal_rank(losses[0], losses[1:], c.space_size), "skew-normal"
            row[f"canary/{c.name}/exposure"] = exposure(rank, c.space_size)
            row[f"canary/{c.name}/rank"] = rank
            listed.append(
                {
                    "name": c.name,
                    "secret": c.secret,
                    "space_size": c.space_size,
                    "rank": rank,
                    "exposure": row[f"canary/{c.name}/exposure"],
                    "method": method,
                    "seconds": round(time.time() - started, 2),
                }
            )
        if ev.final:
            ev.notes["canaries"] = listed
        return row

    def losses(self, model, texts: list[str]) -> np.ndarray:
        return sequence_losses(model, texts, self.tokenizer, self.eot_id, max(self.batch_size, 256))


def build(setup: Setup) -> Canaries | None:
    return Canaries(setup) if setup.corpus.canaries else None
