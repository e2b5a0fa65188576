"""The per-sequence table (gptfit.metrics.sequences) at the memorization cadence: every sequence of both
sides with its extraction under each decoding setting, exact match, memorized bits and membership scores,
its exposures from the ledger, and the mem/, mia/, dup/ and planted keys aggregated from it.

The sides: the candidates of data.subset (every one, whatever eval.sequences says), the sequences of
data=uniform, or eval.sequences ordinary training and held-out sequences; then the planted duplicates and
the forget set. With train.goldfish the table gets the `goldfish_dropped` column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from gptfit.data.duplicates import spans
from gptfit.data.goldfish import goldfish_dropped
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics import membership, sequences
from gptfit.metrics.population import Population, held_out_population


def sampling_seed(seed: int, step: int) -> int:
    """The seed of an evaluation's decoding: its own per run seed and step, so that evaluating never moves the
    random state that training depends on, and a resumed run samples what an uninterrupted one would."""
    return seed * 1_000_003 + step


def sides_of(setup: Setup) -> list[sequences.Sequences]:
    corpus, e = setup.corpus, setup.eval
    span = e.prefix_tokens + e.suffix_tokens
    groups = corpus.planted + ([corpus.forgotten] if corpus.forgotten is not None else [])
    planted = spans(len(corpus.train), groups, span) if groups else None
    if corpus.subset is not None:
        sides = sequences.subset_sides(corpus.subset)
    elif corpus.uniform is not None:  # the sequences themselves (the config made L their length)
        sides = sequences.uniform_sides(corpus.uniform, e.sequences)
    else:
        sides = sequences.both_sides(
            corpus.train, corpus.val, corpus.eot_id, span, e.sequences, planted, e.heldout_sequences
        )
    if corpus.planted:
        sides += sequences.duplicate_sides(corpus.train, corpus.eot_id, corpus.planted, corpus.aside)
    if corpus.forgotten is not None:
        sides.append(sequences.planted_side(corpus.train, corpus.eot_id, [corpus.forgotten], "forget"))
    return sides


def held_out_of(setup: Setup, sides: list[sequences.Sequences]) -> Population | None:
    """The held-out population outside the table (gptfit.metrics.population), for ordinary text sides."""
    val = next((s for s in sides if s.split == "val" and s.kind == "sample"), None)
    if val is None or setup.corpus.subset is not None or setup.corpus.uniform is not None:
        return None
    return held_out_population(
        setup.corpus.val,
        val.tokens.shape[1],
        val.offsets,
        setup.eval.mia.population,
        len(setup.tokenizer),
        setup.reference,
        setup.eval.batch_size,
        min(setup.eval.mia.recall_tokens, setup.block_size - val.tokens.shape[1]),  # what the context leaves
    )


class SequenceTable(Measure):
    keys = ("mem/<name>", "mem/<name>/<name>", "mia/<name>/<name>", "dup/<name>/<name>", "forget/<name>")
    when = When.TABLE

    def __init__(self, setup: Setup):
        e = self.eval = setup.eval
        self.seed, self.split_seed, self.block_size = setup.seed, setup.split_seed, setup.block_size
        self.decoding, self.train_tokens = dict(setup.decoding), len(setup.corpus.train)
        self.span = e.prefix_tokens + e.suffix_tokens
        self.sides = sides_of(setup)
        sequences.prepare_membership(self.sides, setup.tokenizer, setup.reference, e.batch_size, setup.split_seed)
        self.held_out = held_out_of(setup, self.sides)
        self.reference_path = setup.reference_path
        self.goldfish_dropped = None  # [rows], fixed for the run: it depends on the tokens alone
        goldfish = setup.train.goldfish
        if goldfish.k is not None:
            streams = {"train": setup.corpus.train, "val": setup.corpus.val}
            separator = setup.corpus.eot_id if goldfish.context == "document" else None  # as training's mask
            self.goldfish_dropped = goldfish_dropped(
                self.sides, streams, e.prefix_tokens, goldfish.k, goldfish.h, separator
            )

    def at_start(self, model) -> dict:
        return {"mia_reference_model": self.reference_path} if self.reference_path else {}

    def score(self, model, step: int) -> pa.Table:
        """The table's rows under `model`: every side's scores, extraction and membership scores."""
        e = self.eval
        return sequences.score(
            model,
            self.sides,
            e.prefix_tokens,
            self.decoding,
            e.batch_size,
            step,
            sampling_seed(self.seed, step),
            e.mia.k,
            self.held_out,
        )

    def __call__(self, ev: Evaluation) -> dict:
        e = self.eval
        table = self.score(ev.model, ev.step)
        exposure = ev.exposure
        if exposure is None:  # nothing seen yet
            exposure = (np.zeros(self.train_tokens, np.int64), np.full(self.train_tokens, -1, np.int64))
        columns = sequences.exposure_columns(self.sides, *exposure, self.span, self.block_size)
        if self.goldfish_dropped is not None:
            columns["goldfish_dropped"] = self.goldfish_dropped
        for key, values in columns.items():
            table = table.append_column(key, pa.array(values))
        ev.table = table
        resamples = e.mia.bootstrap if ev.final else 0
        if resamples:  # what the intervals rest on: their unit and how many of it each side has
            ev.notes["mia_intervals"] = membership.interval_record(membership.ordinary(table))
        return sequences.aggregates(table, e.extraction_samples, resamples, self.split_seed)


def build(setup: Setup) -> SequenceTable:
    return SequenceTable(setup)
