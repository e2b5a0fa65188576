"""`eval.*`: what every evaluation measures, on which fixed windows and prompts, and how often."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from gptfit.config.checks import Checks
from gptfit.config.data import DATA_SOURCES, CorpusSource
from gptfit.config.model import ModelConfig

# Any source a training corpus can come from, but the grammar and the uniform sequences (languages of their
# own, not general text).
GENERAL_SOURCES = tuple(source for source in DATA_SOURCES if source not in ("grammar", "uniform"))
CANARY_RANKS = ("auto", "enumerate", "skew_normal")
MAX_ENUMERATED = 10**6  # the largest secret space whose fillings are all scored (eval.canary_rank)


@dataclass
class MiaConfig:
    """eval.mia: the membership-inference scores of the per-sequence table (gptfit.metrics.membership)."""

    # Min-K% and Min-K%++ average the lowest share k of a sequence's token scores (Shi et al. 2023).
    k: float = 0.2
    # The reference model of the `reference` and `rmia` scores: a run directory (its final/ or best/ model)
    # or a saved model directory with the same tokenizer. null: a fine-tuning of model=base takes its base
    # (the likelihood ratio against the pretrained model), a run from scratch has none (both scores left out).
    reference: Optional[str] = None
    # Held-out sequences outside the table that RMIA compares each sequence with (its population z; with a
    # reference model only). Fewer where the held-out text holds fewer.
    population: int = 256
    # ReCaLL's prefix: this many held-out tokens outside the table before each sequence (Xie et al. 2024), or
    # as many as model.block_size leaves beside the table's sequences (none when they fill it: no score).
    recall_tokens: int = 32
    # Resamples of whole documents behind the 95% intervals (`_lo`, `_hi`) of every figure, at the last
    # evaluation (0: none). All 200 cost about 2 ms a score on 100 sequences.
    bootstrap: int = 200

    def problems(self) -> list[str]:
        c = Checks("eval.mia", self)
        if c.finite("k"):
            c.need(0.0 < self.k <= 1.0, "k", "must be in (0, 1]: the share of a sequence's tokens Min-K% averages")
        c.at_least("bootstrap", 0)
        c.positive("population")
        c.at_least("recall_tokens", 0, " (0 leaves ReCaLL out)")
        if self.reference and self.reference.startswith(("/", ".", "~")):
            c.need(
                os.path.exists(os.path.expanduser(self.reference)),
                "reference",
                "no such directory; give a run directory or a saved model directory",
            )
        return c.problems


@dataclass
class GeneralCorpus(CorpusSource):
    """One of eval.general: a named corpus of general text whose held-out split is scored at every evaluation
    (general/<name>/loss, general/<name>/bpb, general/<name>/acc, forgetting/<name>). Its source fields are
    data.*'s (the same section); with their defaults a base trained on python_stdlib is scored on text it
    never saw."""

    name: str = MISSING
    source: str = "python_stdlib"
    # Fixed windows of model.block_size tokens scored, spread evenly over the held-out text.
    windows: int = 32

    def problems(self, prefix: str) -> list[str]:
        c = Checks(prefix, self)
        c.need(bool(self.name.strip()), "name", "must not be empty: it names the general/<name>/ keys")
        c.need("/" not in self.name, "name", "must not hold '/': it names the general/<name>/ keys")
        self.source_problems(c, GENERAL_SOURCES, "source")
        c.at_least("windows", 1)
        return c.problems


@dataclass
class EvalConfig:
    # Fixed windows on which train and validation loss are measured at every evaluation.
    train_windows: int = 64
    val_windows: int = 64
    batch_size: int = 64
    # The per-sequence table (sequences.parquet) behind every mem/ key: sequences of prefix_tokens +
    # suffix_tokens tokens at offsets that are multiples of that length, this many a side (training and
    # held-out, the same number; as many as both have when fewer). Extraction: the suffix_tokens after
    # a sequence's prefix_tokens prefix (Pythia's 32 + 32).
    sequences: int = 1024
    # Held-out sequences in the table, whatever the training side holds (null: as many as the training side).
    # A TPR at 1% FPR needs at least 1,000 non-members, more than a small training set has sequences: the
    # sides' balance moves no AUC or TPR, only what an unweighted mean over both sides would read.
    heldout_sequences: Optional[int] = None
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    # mem/<setting>/extraction_any: the share of sequences a sampled setting extracts at least once in
    # this many tries.
    extraction_samples: int = 8
    # Samples under every decoding setting: from held-out prefixes and from these prompts.
    prompts: List[str] = field(default_factory=lambda: ["My cute dog is a"])
    heldout_prompts: int = 8
    prompt_tokens: int = 16
    # A sample "copies" when it holds a verbatim training span of at least copy_span tokens.
    copy_span: int = 16
    max_ngram: int = 8
    # How a canary's rank among the fillings of its format is found: auto (every filling scored at the last
    # evaluation where the format has at most 10^6, a skew-normal fitted to canary_candidates sampled fillings
    # elsewhere), enumerate (as auto, and a larger space is an error), skew_normal (never enumerate).
    canary_rank: str = "auto"
    # Sampled fillings of the format the skew-normal is fitted to.
    canary_candidates: int = 255
    # A fine-tuning of model=base: this many windows of the base's own training text, of which those the base
    # reproduces exactly are followed through the fine-tuning (pretraining/extraction; 0: off).
    pretraining_sequences: int = 0
    # Memorization metrics (exact match, membership inference, extraction, canaries) and samples with
    # their generation metrics at every k-th evaluation (1: at each); both always at the last step.
    memorization_every: int = 1
    generation_every: int = 1
    # Attention pictures of a fixed prompt (W&B images) and each head's entropy (attn/l<layer>h<head>/entropy).
    attention: bool = False
    attention_prompt: str = "My friend was right about this class. It is so fun!"
    # data=grammar only, at the evaluations with samples: held-out sentences scored by the model and by
    # the grammar (grammar/val_nll_model, grammar/val_nll_true). The held-out prompts are the end-of-text
    # token and the first grammar_prompt_tokens tokens of held-out sentences, all different (1: the
    # determiner, so the model chooses the rest of the sentence itself; longer prompts force novel starts).
    grammar_sentences: int = 256
    grammar_prompt_tokens: int = 1
    mia: MiaConfig = field(default_factory=MiaConfig)
    # General ability: corpora of general text scored at every evaluation (general/<name>/loss and bpb, and
    # forgetting/<name>: the loss minus the starting model's). null: automatic (`general_corpora`): the
    # base's held-out text when fine-tuning model=base, none from scratch. [] turns them off.
    general: Optional[List[GeneralCorpus]] = None
    # Samples also start from this many windows of prompt_tokens tokens of the first general corpus's
    # held-out text (source "general"): how narrow the fine-tuned model has become (general_copy_rate).
    general_prompts: int = 4
    # At the end of the run, explore.html: one self-contained page to explore it (python -m gptfit.explore).
    explore: bool = True

    def problems(self) -> list[str]:
        c = Checks("eval", self)
        c.positive(
            "train_windows",
            "val_windows",
            "batch_size",
            "prefix_tokens",
            "suffix_tokens",
            "sequences",
            "extraction_samples",
            "prompt_tokens",
            "copy_span",
            "max_ngram",
            "generation_every",
            "memorization_every",
            "grammar_sentences",
            "grammar_prompt_tokens",
            "canary_candidates",
        )
        c.one_of("canary_rank", CANARY_RANKS)
        if self.heldout_sequences is not None:
            c.positive("heldout_sequences")
        c.at_least("heldout_prompts", 0)
        c.at_least("pretraining_sequences", 0)
        c.at_least("general_prompts", 0)
        for i, prompt in enumerate(self.prompts):
            c.need(bool(prompt.strip()), f"prompts[{i}]", "must not be empty", got=prompt)
        return c.problems + self.mia.problems() + self.general_problems()

    def general_problems(self) -> list[str]:
        problems = []
        names = [corpus.name for corpus in self.general or []]
        for i, corpus in enumerate(self.general or []):
            problems += corpus.problems(f"eval.general[{i}]")
            if corpus.name and names.count(corpus.name) > 1:
                problems.append(f"eval.general[{i}].name={corpus.name!r}: must be unique among eval.general")
        return problems

    def window_problems(self, block_size: int, grammar: bool) -> list[str]:
        """What does not fit the model's window of `block_size` tokens (`grammar`: on data=grammar, whose
        prompts are the grammar's). A block size below 2 is model.block_size's own problem, said once."""
        c = Checks("eval", self)
        if block_size < 2:
            return []
        span = self.prefix_tokens + self.suffix_tokens
        if span > block_size:
            c.line(
                f"eval.prefix_tokens + eval.suffix_tokens = {span}: must fit model.block_size={block_size}; "
                "lower them or raise the block size"
            )
        if self.prompt_tokens >= block_size:
            c.line(f"eval.prompt_tokens={self.prompt_tokens}: must be below model.block_size={block_size}")
        if grammar and self.grammar_prompt_tokens + 1 >= block_size:
            c.line(
                f"eval.grammar_prompt_tokens={self.grammar_prompt_tokens}: must be below model.block_size - 1 "
                f"= {block_size - 1} (the prompt also holds the end-of-text token)"
            )
        return c.problems


def general_corpora(eval: EvalConfig, model: ModelConfig) -> list[GeneralCorpus]:
    """The general corpora a run scores: eval.general when given; else, fine-tuning the base (model=base),
    the held-out text of the base's corpus under its default split; else (from scratch, or a hub model with
    no corpus of its own known) none."""
    if eval.general is not None:
        return list(eval.general)
    if model.kind == "base":
        return [GeneralCorpus(name="base", source="python_stdlib")]
    return []
