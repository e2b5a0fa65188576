"""data=uniform: uniformly random token sequences, where nothing can be generalized (Morris et al. 2025).

The training set is `data.uniform.sequences` sequences of `length` tokens, each token drawn uniformly
from `vocab` symbols; the held-out set is as many, drawn the same way from a stream of their own, so
neither depends on the other's size. Each sequence is a document of its own: the streams are the
sequences, each followed by end-of-text. The true distribution is known exactly: a sequence's tokens 2 ...
length have probability vocab ** -(length - 1), the reference of its memorized bits
(gptfit.metrics.bits). With a small vocab and length two sequences may come out equal; nothing
removes them (at the default 16 symbols and 64 tokens a repeat is never seen).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from gptfit.config import UniformConfig

# The streams of np.random.default_rng((seed, stream)) that draw each side.
TRAIN_STREAM, VAL_STREAM = 0, 1


@dataclass
class UniformSet:
    """The sequences of a data=uniform corpus, by side."""

    vocab: int
    train: np.ndarray  # [sequences, length] int64, the training set
    val: np.ndarray  # [sequences, length] int64, the held-out set

    @property
    def length(self) -> int:
        return self.train.shape[1]

    def reference_log2(self) -> float:
        """log2 p of a sequence's predicted tokens (2 ... length) under the true, uniform distribution."""
        return -(self.length - 1) * math.log2(self.vocab)

    def offsets(self) -> np.ndarray:
        """[sequences] where each sequence starts in its side's stream (after the end-of-text of the one before)."""
        return np.arange(len(self.train)) * (self.length + 1)


def draw_sequences(uniform: UniformConfig) -> UniformSet:
    """The training and held-out sequences of `data.uniform`."""

    def side(stream: int) -> np.ndarray:
        rng = np.random.default_rng((uniform.seed, stream))
        return rng.integers(0, uniform.vocab, size=(uniform.sequences, uniform.length), dtype=np.int64)

    return UniformSet(uniform.vocab, side(TRAIN_STREAM), side(VAL_STREAM))


def joined(sequences: np.ndarray, eot_id: int) -> np.ndarray:
    """[sequences * (length + 1)] the sequences, each followed by end-of-text."""
    ended = np.concatenate([sequences, np.full((len(sequences), 1), eot_id, np.int64)], axis=1)
    return ended.ravel()


def set_hash(uniform: UniformConfig) -> str:
    """The corpus hash of a data=uniform set: its knobs fix every token."""
    key = f"uniform-v1:{uniform.vocab}:{uniform.length}:{uniform.sequences}:{uniform.seed}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]
