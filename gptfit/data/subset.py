"""data.subset: training on a seeded random subset of a pool of candidate sequences, for shadow models.

The candidates are the non-overlapping sequences of L = eval.prefix_tokens + eval.suffix_tokens tokens
of the first `data.train_tokens` tokens of the training pool, the same for every `data.subset.seed`
(they follow `data.split_seed`). A run trains on round(fraction * candidates) of them drawn from
`data.subset.seed`, each as a document of its own (followed by end-of-text), so that an "out" candidate
never overlaps an "in" one. Models trained on many such subsets give every candidate models with it and
models without it: LiRA and counterfactual memorization (`python -m gptfit.mia`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from gptfit.data.windows import document_index
from gptfit.errors import UserError


@dataclass
class Subset:
    """The candidates of a run and which of them it trains on."""

    fraction: float
    seed: int
    tokens: np.ndarray  # [candidates, L] int64
    documents: np.ndarray  # [candidates] the pool document of each one's first token
    members: np.ndarray  # [candidates] bool: in the training set
    positions: np.ndarray  # [candidates] where each member starts in the training stream (-1: out)

    def record(self) -> dict:
        """What `subset.json` holds: enough to tell, for every candidate, whether this run trained on it."""
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "sequence_tokens": int(self.tokens.shape[1]),
            "candidates": int(len(self.tokens)),
            "members": np.flatnonzero(self.members).tolist(),
        }


def draw(pool: np.ndarray, eot_id: int, length: int, fraction: float, seed: int) -> tuple[np.ndarray, Subset]:
    """(the training stream, the Subset) from the candidates of `pool` (the first data.train_tokens tokens)."""
    n = len(pool) // length
    chosen = round(fraction * n)
    if chosen < 1 or chosen == n:
        raise UserError(
            f"data.subset.fraction={fraction}: of {n} candidate sequences of {length} tokens it keeps "
            f"{chosen}, so one side is empty; raise data.train_tokens or move the fraction from 0 and 1"
        )
    tokens = np.asarray(pool[: n * length], dtype=np.int64).reshape(n, length)
    documents = document_index(pool, eot_id)[np.arange(n) * length]
    rng = np.random.default_rng(zlib.crc32(f"subset:{seed}".encode()))
    members = np.zeros(n, dtype=bool)
    members[rng.permutation(n)[:chosen]] = True
    positions = np.full(n, -1, dtype=np.int64)
    positions[members] = np.arange(chosen) * (length + 1)
    stream = np.concatenate([tokens[members], np.full((chosen, 1), eot_id, dtype=np.int64)], axis=1).ravel()
    return stream, Subset(fraction, seed, tokens, documents, members, positions)
