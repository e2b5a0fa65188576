"""The one kind every measure is: what it is built from (`Setup`), what one evaluation hands it
(`Evaluation`), and when it runs (`When`).

A measure is built once per run by its module's `build(setup)`, which returns None where the run does not
call for it (no general corpora, no canaries, not data=uniform, ...). Each evaluation calls every measure
whose `when` is due, in the registry's order (gptfit/measures/__init__.py); a measure returns the metric keys
it measured and may leave what later measures read (the per-sequence table, the decoded samples, figures)
on the `Evaluation`.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from gptfit.config import DataConfig, EvalConfig, GeneralCorpus, GrammarConfig, TrainConfig, UnlearnConfig
from gptfit.core.decoding_settings import DecodingConfig
from gptfit.data.corpus import Corpus
from gptfit.data.general import general_texts
from gptfit.data.tokenizer import tokenizer_hash
from gptfit.errors import UserError
from gptfit.model.loading import load_model, load_tokenizer, resolve_model_dir


class When(enum.Enum):
    """When a measure runs: at every evaluation; at the memorization cadence (eval.memorization_every, the
    last evaluation, and best/'s scoring at the end); at the generation cadence (eval.generation_every and
    the last evaluation)."""

    EACH = "each"
    TABLE = "table"
    SAMPLES = "samples"


@dataclass
class Setup:
    """What a run's measures are built from, fixed when the run starts. `seed` is the run's (it seeds
    decoding), `split_seed` the data's (it draws the held-out prompts and bootstraps); `grammar` is
    data.grammar on data=grammar, else None; `general`: the run's general corpora, resolved; `train`: the
    train section (its mitigations shape what the table records); `privacy`: the run's DP-SGD plan (an
    object with `epsilon(step)`), None without train.dp; `base`: the model a fine-tuning of model=base
    starts from, the membership scores' reference model unless eval.mia.reference names another."""

    eval: EvalConfig
    decoding: dict[str, DecodingConfig]
    corpus: Corpus
    tokenizer: Any
    block_size: int
    eval_every: int
    seed: int
    split_seed: int
    grammar: GrammarConfig | None = None
    general: Sequence[GeneralCorpus] = ()
    cache_dir: str = DataConfig.cache_dir
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: Any = None
    base: str | None = None
    unlearn: UnlearnConfig | None = None  # an unlearning run's section (its retrained model), else None

    @property
    def reference_path(self) -> str | None:
        """The reference model of the membership scores: eval.mia.reference, or a fine-tuning's base (the
        likelihood ratio against the pretrained model, Mireshghallah et al. 2022)."""
        return self.eval.mia.reference or self.base

    @functools.cached_property
    def reference(self):
        """The reference model, loaded once for every measure that reads it (None without one)."""
        path = self.reference_path
        return load_reference(path, self.corpus.tokenizer_hash) if path else None

    @functools.cached_property
    def general_held_out(self) -> list:
        """Each general corpus's held-out text, read and cached in data.cache_dir, in eval.general's order."""
        return general_texts(list(self.general), self.tokenizer, self.corpus.eot_id, self.cache_dir, self.block_size)

    @property
    def window_stride(self) -> int:
        """Where fixed loss windows may start: on data=uniform where sequences start (elsewhere they would
        cut them, and the losses would be a memorizing model's on text it never saw in that place)."""
        return self.corpus.uniform.length + 1 if self.corpus.uniform is not None else 1


@dataclass
class Evaluation:
    """One evaluation in progress. `exposure`: the ledger's (starts, last_seen) so far; `final`: the run's
    last evaluation (it also bootstraps intervals). Measures leave on it what later ones read."""

    model: Any
    step: int
    final: bool = False
    exposure: tuple[np.ndarray, np.ndarray] | None = None
    table: pa.Table | None = None  # the per-sequence table, where this evaluation scored one
    samples: list = field(default_factory=list)  # the decoded samples (measures/generation.py's Sample)
    decoded: dict[str, tuple[list, np.ndarray]] = field(default_factory=dict)  # setting -> (prompts, new tokens)
    figures: dict = field(default_factory=dict)  # name -> matplotlib figure
    notes: dict = field(default_factory=dict)  # facts for summary.json that are not metrics (its keys)


class Measure:
    """One thing an evaluation measures. `keys`: the metric keys it writes, as patterns (`<name>` stands for
    any one part of a key between slashes: a decoding setting, a corpus, a score); `when`: its cadence."""

    keys: ClassVar[tuple[str, ...]] = ()
    when: ClassVar[When] = When.EACH

    def __call__(self, ev: Evaluation) -> dict:
        raise NotImplementedError

    def at_start(self, model) -> dict:
        """Keys known before training, logged once into the summary."""
        return {}

    def resume(self, first_row: dict) -> None:
        """A resumed run's metrics row of step 0, for measures that count from the start."""


def key_pattern(pattern: str) -> re.Pattern:
    """A `keys` pattern as a regular expression: `<name>` is one part of a key between slashes, `<n>` a number."""
    return re.compile(re.escape(pattern).replace("<name>", "[^/]+").replace("<n>", "[0-9]+"))


def declares(measure: Measure, key: str) -> bool:
    return any(key_pattern(p).fullmatch(key) for p in measure.keys)


def load_reference(path: str, ours: str):
    """The reference model of the membership score `reference`, which must share the run's tokenizer
    (`ours`: its hash)."""
    directory = resolve_model_dir(path, key="eval.mia.reference")
    theirs = tokenizer_hash(load_tokenizer(str(directory)))
    if theirs != ours:
        raise UserError(
            f"eval.mia.reference={path!r}: its tokenizer ({theirs}) is not this run's ({ours}), so "
            "it cannot score the same tokens; use a model trained with this corpus's tokenizer (same "
            "data source, data.split_seed, data.val_fraction and data.vocab_size)"
        )
    return load_model(str(directory))
