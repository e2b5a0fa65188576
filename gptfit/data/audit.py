"""Audit sequences for a privacy audit in one training run (Steinke, Nasr and Jagielski 2023): `data.audit
.sequences` sequences of `length` uniformly random tokens (the most distinct canaries there are: nothing in
them can be generalized), each put in the training text independently with probability `probability`, as its
own document at a seeded document boundary. The audit's draws are seeded by `data.audit.seed` alone."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass
class AuditSet:
    tokens: np.ndarray  # [m, L] the audit sequences
    included: np.ndarray  # [m] bool: each one's coin, in the training text or not
    guesses: int  # the auditor guesses "in" for this many highest scores and "out" for as many lowest


def draw_audit(audit, vocab: int, eot_id: int) -> AuditSet:
    """`audit`: data.audit (AuditConfig)."""
    rng = np.random.default_rng(zlib.crc32(f"audit:{audit.seed}".encode()))
    tokens = rng.integers(0, vocab - 1, (audit.sequences, audit.length))  # [m, L] every id but one ...
    tokens[tokens >= eot_id] += 1  # ... that one the end-of-text token, which would split a sequence
    return AuditSet(tokens, rng.random(audit.sequences) < audit.probability, audit.guesses)


def plant_audit(train: np.ndarray, audit: AuditSet, eot_id: int, seed: int) -> np.ndarray:
    """The training stream with each included audit sequence inserted once, after a seeded end-of-text token."""
    boundaries = np.flatnonzero(train == eot_id) + 1
    if len(boundaries) == 0:
        boundaries = np.array([0])
    rng = np.random.default_rng(zlib.crc32(f"audit-places:{seed}".encode()))
    chosen = audit.tokens[audit.included]
    places = np.sort(rng.choice(boundaries, size=len(chosen)))
    pieces, last = [], 0
    for place, tokens in zip(places, chosen):
        pieces += [train[last:place], tokens, [eot_id]]
        last = place
    pieces.append(train[last:])
    return np.concatenate(pieces).astype(train.dtype)
