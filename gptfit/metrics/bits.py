"""Memorized bits (Morris et al. 2025, "How much do language models memorize?").

The unintended memorization of a sequence x by a model against a reference is estimated as
max(0, log2 p(x | model) - log2 p(x | reference)) bits, over the sequence's predicted tokens 2 ... L
(the first token is never predicted). On data=uniform the reference is the true distribution, exact:
log2 p = -(L - 1) log2 vocab, so a sequence holds at most that many bits. On text it is eval.mia.reference,
a model that knows the distribution better; without one the bits are not estimable (null).

Per sequence this is the table's `mem_bits` column (gptfit.metrics.sequences); on data=uniform
`capacity/bits_total` sums it over every training sequence and `capacity/bits_per_param` divides that by
the model's parameters, counted once (tied input and output embeddings are one tensor).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from gptfit.data.uniform import UniformSet
from gptfit.metrics.scoring import score_sequences
from gptfit.model.finetune import count_parameters


def memorized_bits(nats: np.ndarray, reference_log2: np.ndarray | None) -> np.ndarray | None:
    """[n] each sequence's memorized bits, from `nats` ([n] the model's loss summed over its predicted tokens)
    and `reference_log2` ([n] the reference's log2 p of the same tokens); None without a reference."""
    if reference_log2 is None:
        return None
    model_log2 = -np.asarray(nats, dtype=np.float64) / math.log(2)
    return np.maximum(0.0, model_log2 - reference_log2)


def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, those outside the embeddings): a tensor shared by two layers counts once, adapters
    not at all; the embeddings are the token and position tables (nn.Embedding), as transformers counts."""
    total = count_parameters(model)[1]
    tables = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)}
    return total, total - sum(tables.values())


def training_bits(table: pa.Table) -> np.ndarray:
    """[rows] the mem_bits of the table's ordinary training sequences (null: 0, which only a missing
    reference gives)."""
    rows = table.filter(pc.and_(pc.equal(table["kind"], "sample"), pc.equal(table["split"], "train")))
    return np.asarray(rows["mem_bits"].fill_null(0.0), dtype=np.float64)


def uniform_bits(model, uniform: UniformSet, table: pa.Table | None, batch_size: int) -> float:
    """capacity/bits_total on data=uniform: the memorized bits of every training sequence. The table's sum
    when it holds them all; else one batched forward over them, scored as the table scores them (float64
    log-probabilities). It stays cheap: the sequences are few and short, and nothing is decoded."""
    if table is not None:
        bits = training_bits(table)
        if len(bits) == len(uniform.train):
            return float(bits.sum())
    scores = score_sequences(model, torch.from_numpy(uniform.train), batch_size, moments=True)
    return float(memorized_bits(scores.total().numpy(), np.full(len(uniform.train), uniform.reference_log2())).sum())


def dataset_bits(reference, train: np.ndarray, block: int, batch_size: int) -> float:
    """capacity/dataset_bits on text: the training set's information as the reference model knows it, its
    negative log2-likelihood: the mean bits of the tokens the reference predicts in the stream's
    non-overlapping windows (the first of each is never predicted), times the training tokens."""
    windows = torch.from_numpy(train[: len(train) // block * block].reshape(-1, block))  # [windows, block]
    nats = score_sequences(reference, windows, batch_size).mean()  # [windows] mean nats a predicted token
    return float(nats.mean()) / math.log(2) * len(train)
