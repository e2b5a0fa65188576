"""Held-out text outside the per-sequence table, for the membership scores that compare a sequence with text
known to be unseen: RMIA's population z (Zarifzadeh et al. 2024: non-members of the target and of every
reference model), DC-PDD's token frequencies (Zhang et al. 2024: a reference corpus's counts) and ReCaLL's
non-member prefix (Xie et al. 2024).

The population's sequences are the held-out stream's windows of the table's length that the table did not
take (the same aligned grid `gptfit.metrics.sequences.pick` chooses from), so no sequence is both a test
non-member and a population sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gptfit.metrics.scoring import score_sequences


@dataclass
class Population:
    tokens: torch.Tensor  # [m, L] held-out sequences outside the table
    log_inv_freq: np.ndarray  # [vocab] log(1 / f(v)), f the smoothed frequency in the held-out stream
    reference_p: np.ndarray | None = None  # [m] under the reference model (None: no reference)
    recall_prefix: torch.Tensor | None = None  # [k] ReCaLL's prefix of held-out tokens (None: no room for it)


@dataclass
class Compared:
    """What DC-PDD, RMIA and ReCaLL read of one side of the table at one evaluation."""

    tokens: np.ndarray  # [n, L]
    population: Population
    target_z: np.ndarray | None  # [m] the population under the evaluated model (RMIA; None without reference)
    conditioned: np.ndarray | None  # [n, L - 1] log p of tokens[:, 1:] after ReCaLL's prefix (None: no prefix)


def geometric_p(log_probs: np.ndarray) -> np.ndarray:
    """[n] a sequence's geometric-mean token probability, exp(mean log p): in [0, 1] whatever its length."""
    return np.exp(np.asarray(log_probs, dtype=np.float64).mean(axis=1))


def log_inverse_frequency(stream: np.ndarray, vocab: int) -> np.ndarray:
    """[vocab] log(1 / f(v)) with f(v) = (count(v) + 1) / (N + V), DC-PDD's smoothed frequency."""
    counts = np.bincount(np.asarray(stream, dtype=np.int64), minlength=vocab)[:vocab]  # [vocab]
    return -np.log((counts + 1) / (len(stream) + vocab))


def held_out_population(
    val: np.ndarray,
    length: int,
    taken: np.ndarray,
    count: int,
    vocab: int,
    reference,
    batch_size: int,
    recall_tokens: int = 0,
) -> Population:
    """Up to `count` held-out windows of `length` tokens at aligned starts the table did not take
    (`taken`: its held-out offsets), evenly spread; with `reference` (a model) their reference probabilities;
    with `recall_tokens` ReCaLL's prefix, that many tokens of those windows."""
    starts = np.setdiff1d(np.arange(len(val) // length) * length, taken)
    chosen = starts[np.unique(np.linspace(0, len(starts) - 1, num=min(count, len(starts))).round().astype(int))]
    chosen = chosen if len(starts) else starts
    index = chosen[:, None] + np.arange(length)[None, :]  # [m, L]
    tokens = torch.from_numpy(np.asarray(val, dtype=np.int64)[index])
    population = Population(tokens, log_inverse_frequency(val, vocab))
    if recall_tokens > 0 and tokens.numel() >= recall_tokens:
        population.recall_prefix = tokens.reshape(-1)[:recall_tokens]  # [k] whole held-out windows, in order
    if reference is not None and len(chosen):
        population.reference_p = geometric_p(-score_sequences(reference, tokens, batch_size).losses.numpy())
    return population


def conditioned_log_probs(model, tokens: torch.Tensor, prefix: torch.Tensor, batch_size: int) -> np.ndarray:
    """[n, L - 1] log p of tokens[:, 1:] with `prefix` ([k]) before each sequence (ReCaLL's LL(x | P): the
    prefix's own tokens are not scored)."""
    joined = torch.cat([prefix.expand(len(tokens), -1), tokens], dim=1)  # [n, k + L]
    return -score_sequences(model, joined, batch_size).losses.numpy()[:, len(prefix) :]  # [n, L - 1]


def target_p(model, population: Population, batch_size: int) -> np.ndarray | None:
    """[m] the population under the evaluated model, where RMIA can use it (a reference, some samples)."""
    if population.reference_p is None or len(population.tokens) == 0:
        return None
    return geometric_p(-score_sequences(model, population.tokens, batch_size).losses.numpy())
