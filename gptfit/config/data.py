"""`data.*`: the corpus, its held-out split and training size, the tokenizer, planted canaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from gptfit.config.checks import Checks
from gptfit.config.grammar import GrammarSpec, spec_of
from gptfit.config.grammar import problems as grammar_problems

DATA_SOURCES = ("python_docs", "python_stdlib", "text", "hf", "grammar", "uniform")
SAMPLE_BY = ("paragraph", "line", "document")
DEDUP_KEEP = ("first", "none")  # data.dedup.keep
SLOT, DIGITS = "#", "0123456789"  # a canary format's secret digits


@dataclass
class CanaryConfig:
    """A secret planted in the training text (exposure is measured at each evaluation)."""

    name: str = MISSING
    # Every "#" is a secret digit, e.g. "my pin is ####".
    format: str = MISSING
    repeats: int = 1

    @property
    def space_size(self) -> int:
        """How many secrets the format holds."""
        return len(DIGITS) ** self.format.count(SLOT)


@dataclass
class GrammarConfig(GrammarSpec):
    """data=grammar: the knobs of the synthetic language (`gptfit.config.grammar.GrammarSpec`, where each is
    explained), and how many sentences it generates for the corpus, one document each."""

    # Enough for the training pool of a 64k-token training set plus the held-out sentences.
    n_sentences: int = 10000


@dataclass
class UniformConfig:
    """data=uniform (Morris et al. 2025): `sequences` independent sequences of `length` tokens, each token drawn
    uniformly from `vocab` symbols, each sequence a document of its own (followed by end-of-text), and a
    held-out set of as many drawn the same way (gptfit.data.uniform). Nothing in them can be generalized, so
    what a model knows of them it memorized: (length - 1) x log2(vocab) bits a sequence at most."""

    # Symbols; the tokenizer has one token for each, plus end-of-text.
    vocab: int = 16
    # Tokens a sequence (at most model.block_size; the per-sequence table's sequences are these, so
    # eval.prefix_tokens + eval.suffix_tokens must equal it).
    length: int = 64
    # The training set: exactly this many sequences, and as many held out (data.train_tokens, data.vocab_size
    # and data.val_fraction are ignored).
    sequences: int = 256
    # Draws the sequences, independent of `seed` and data.split_seed; the held-out ones come from a stream
    # of their own.
    seed: int = 0

    def problems(self) -> list[str]:
        c = Checks("data.uniform", self)
        c.at_least("vocab", 2, " (one symbol holds no information)")
        c.at_least("length", 2, " (a sequence's first token is never predicted)")
        c.at_least("sequences", 1, " (the training set is that many sequences)")
        c.seed("seed")
        return c.problems


@dataclass
class DuplicatesConfig:
    """data.duplicates: sequences of held-aside text planted `count` times each (gptfit.data.duplicates).
    Off while per_count is null; +data/duplicates=ladder (conf/data/duplicates/ladder.yaml) turns it on."""

    # How many times each rung's sequences are planted.
    counts: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    # Sequences per count (and as many never planted: the count-0 baseline). null: off.
    per_count: Optional[int] = None

    @property
    def on(self) -> bool:
        return self.per_count is not None


@dataclass
class ForgetConfig:
    """data.forget: held-aside sequences planted `copies` times, in the training text of the steps up to
    `until_step` only (gptfit.data.duplicates). Off while sequences is null; +data/forget=default
    (conf/data/forget/default.yaml) turns it on."""

    # How many sequences are planted and later forgotten. null: off.
    sequences: Optional[int] = None
    # Copies of each in the training text.
    copies: int = 16
    # The last step whose training windows hold them (0: none ever does, as in the model retrained without
    # them that unlearning is measured against).
    until_step: int = 800

    @property
    def on(self) -> bool:
        return self.sequences is not None


@dataclass
class SubsetConfig:
    """data.subset: train on a seeded random share of the candidate sequences (gptfit.data.subset), for
    shadow models. Off while fraction is null; +data/subset=half (conf/data/subset/half.yaml) turns it on,
    and a sweep over data.subset.seed gives every candidate models with it and without it."""

    # The share of the candidates each model trains on (0.5 for LiRA). null: off.
    fraction: Optional[float] = None
    # Which share: every seed draws its own.
    seed: int = 0

    @property
    def on(self) -> bool:
        return self.fraction is not None


@dataclass
class DedupConfig:
    """data.dedup (Lee et al. 2022): exact-substring deduplication of the training set (gptfit/data/dedup.py)."""

    # Remove repeated spans of at least min_tokens tokens (null: off; Lee et al. use 50).
    min_tokens: Optional[int] = None
    # Which copy of a repeated span stays: first (every later occurrence goes) or none (every occurrence goes,
    # as in Lee et al.'s released tool). first is the default so that runs made before this key existed,
    # which all kept the first, come out the same.
    keep: str = "first"


@dataclass
class AuditConfig:
    """data.audit: a privacy audit in one training run (Steinke, Nasr and Jagielski 2023; gptfit/data/audit.py,
    gptfit/metrics/audit.py): random-token sequences, each in the training text with `probability`, and a
    95% lower bound on epsilon from the model's scores of them at the end (privacy/epsilon_lower)."""

    # Audit sequences (0: off). The paper's bound needs many: +experiment=dp_audit uses 1000.
    sequences: int = 0
    # Tokens in each, uniformly random (never the end-of-text token).
    length: int = 16
    # Each one's chance of being in the training text, independently of the others (the paper's 1/2).
    probability: float = 0.5
    # The auditor guesses "in" for this many highest scores and "out" for as many lowest, and abstains on the
    # rest. Fixed before the scores are seen, as the bound's confidence requires.
    guesses: int = 100
    # Draws the sequences and their coins, independent of `seed` and data.split_seed.
    seed: int = 0

    def problems(self) -> list[str]:
        c = Checks("data.audit", self)
        c.at_least("sequences", 0, " (0 turns the audit off)")
        if self.sequences > 0:
            c.at_least("length", 1)
            if c.finite("probability"):
                c.need(0.0 < self.probability < 1.0, "probability", "must be in (0, 1)")
            c.at_least("guesses", 1)
            c.need(2 * self.guesses <= self.sequences, "guesses", f"must be at most half of sequences={self.sequences}")
            c.seed("seed")
        return c.problems


@dataclass
class CorpusSource:
    """Where a corpus's documents come from and how its held-out split is drawn: the part data.* and each
    eval.general corpus share (gptfit.data.sources reads it)."""

    # python_docs (embedded), python_stdlib (python_docs and the standard library's docstrings: general text
    # that ships with every Python, the base model's corpus), text (local files), hf (a datasets dataset,
    # hub or saved to disk), grammar (sentences of a synthetic language, data.grammar), uniform (uniformly
    # random token sequences, data.uniform: the corpus and tokenizer of a capacity measurement). eval.general
    # takes any but grammar and uniform.
    source: str = "python_docs"
    # text: a file, a folder or a glob pattern; hf: a hub name or a directory saved with save_to_disk.
    path: Optional[str] = None
    # hf only: the dataset configuration, split and text column.
    hf_config: Optional[str] = None
    split: str = "train"
    text_column: str = "text"
    # text only: one document per paragraph (blank-line separated), line, or whole file (document).
    sample_by: str = "paragraph"
    # Seeds the held-out split and the document order, independent of `seed`.
    split_seed: int = 0
    # Share of the corpus's characters held out for validation (whole documents).
    val_fraction: float = 0.1

    def source_problems(self, c: Checks, sources: tuple[str, ...], label: str) -> None:
        """The shared fields' checks, as lines of `c` (which names the section); `label` names the source in
        a missing path's line (`data=text`, `source=text`)."""
        c.one_of("source", sources)
        c.corpus_path(self.source, self.path, label)
        c.one_of("sample_by", SAMPLE_BY)
        c.seed("split_seed")
        if c.finite("val_fraction"):
            c.need(0.0 < self.val_fraction < 1.0, "val_fraction", "must be in (0, 1)")


@dataclass
class DataConfig(CorpusSource):
    # Training size in tokens: the first train_tokens of the shuffled training pool (nested subsets).
    # Ignored under data=uniform, whose training set is data.uniform.sequences sequences.
    train_tokens: int = 16384
    # Where the training set starts in the pool (0: at its start, so every smaller set is inside every
    # larger one). A later start trains on text that the sets of a corpus-size sweep do not hold: a
    # reference model for membership inference (eval.mia.reference).
    train_offset: int = 0
    # Byte-level BPE vocabulary size for models trained from scratch. Ignored under data=uniform, whose
    # vocabulary is data.uniform.vocab symbols and end-of-text.
    vocab_size: int = 2048
    # Where tokenizers and encoded corpora are cached (by content hash).
    cache_dir: str = "~/.cache/gptfit"
    # Secrets planted in the training text (kept out of the tokenizer's text and the held-out text).
    canaries: List[CanaryConfig] = field(default_factory=list)
    # data=grammar only (conf/data/grammar.yaml sets it).
    grammar: Optional[GrammarConfig] = None
    # data=uniform only (conf/data/uniform.yaml sets it).
    uniform: Optional[UniformConfig] = None
    # The duplication ladder (off: per_count=null): +data/duplicates=ladder, or data.duplicates.per_count=8.
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    # Forgetting (off: sequences=null): +data/forget=default, or data.forget.sequences=64.
    forget: ForgetConfig = field(default_factory=ForgetConfig)
    # Shadow models (off: fraction=null): +data/subset=half, or data.subset.fraction=0.5 with data.subset.seed=3.
    subset: SubsetConfig = field(default_factory=SubsetConfig)
    # Deduplication (off: min_tokens=null), applied after canaries, duplicates and the forgotten set are planted.
    dedup: DedupConfig = field(default_factory=DedupConfig)
    # A privacy audit in one run (off: sequences=0), planted after the canaries: +experiment=dp_audit.
    audit: AuditConfig = field(default_factory=AuditConfig)

    def problems(self) -> list[str]:
        c = Checks("data", self)
        self.source_problems(c, DATA_SOURCES, "data")
        if self.source != "uniform":  # ignored under data=uniform
            c.positive("train_tokens")
            c.need(self.vocab_size >= 260, "vocab_size", "must be >= 260 (256 bytes plus special tokens)")
        c.at_least("train_offset", 0)
        if self.source == "uniform":
            c.problems.extend(self.uniform_problems())
        if self.source == "grammar":
            if self.grammar is None:
                c.line("data.grammar=None: data.source=grammar needs the grammar's knobs; use data=grammar")
            else:
                c.problems.extend(grammar_problems(spec_of(self.grammar)))
                c.need(
                    self.grammar.n_sentences >= 2,
                    "grammar.n_sentences",
                    "must be >= 2 (some are held out)",
                    got=self.grammar.n_sentences,
                )
        if self.duplicates.on:
            d = Checks("data.duplicates", self.duplicates)
            d.need(
                len(self.duplicates.counts) > 0 and all(n >= 1 for n in self.duplicates.counts),
                "counts",
                "every count must be >= 1 (count 0, never planted, is the baseline: always measured)",
                got=list(self.duplicates.counts),
            )
            d.need(
                len(set(self.duplicates.counts)) == len(self.duplicates.counts),
                "counts",
                "must not repeat",
                got=list(self.duplicates.counts),
            )
            d.at_least("per_count", 1)
            c.problems.extend(d.problems)
        if self.forget.on:
            f = Checks("data.forget", self.forget)
            f.at_least("sequences", 1)
            f.at_least("copies", 1)
            f.at_least("until_step", 0, " (0: never trained on)")
            c.problems.extend(f.problems)
        if self.subset.on:
            c.problems.extend(self.subset_problems())
        d = Checks("data.dedup", self.dedup)
        if self.dedup.min_tokens is not None:
            d.at_least("min_tokens", 2, " (null turns deduplication off)")
        d.one_of("keep", DEDUP_KEEP)
        c.problems.extend(d.problems)
        c.problems.extend(self.audit.problems())
        names = [canary.name for canary in self.canaries]
        for i, canary in enumerate(self.canaries):
            k = Checks(f"data.canaries[{i}]", canary)
            k.need("#" in canary.format, "format", 'needs at least one "#" (a secret digit)')
            k.need(canary.repeats >= 1, "repeats", "must be >= 1")
            k.need(names.count(canary.name) == 1 and canary.name.isidentifier(), "name", "must be a unique identifier")
            c.problems.extend(k.problems)
        return c.problems

    def uniform_problems(self) -> list[str]:
        """data=uniform: its knobs, and none of the parts that plant or cut text (their secrets and sequences
        are text of a corpus, and the uniform set is exactly its sequences)."""
        if self.uniform is None:
            return ["data.uniform=None: data.source=uniform needs the sequences' knobs; use data=uniform"]
        problems = self.uniform.problems()
        others = self.text_edits() + [
            name for name, on in (("data.subset", self.subset.on), ("data.train_offset", self.train_offset)) if on
        ]
        if others:
            problems.append(
                f"data=uniform: cannot be combined with {', '.join(others)}; its training set is exactly "
                "data.uniform.sequences random sequences"
            )
        return problems

    def text_edits(self) -> list[str]:
        """The parts that plant text into the training set or cut it out, where they are on."""
        parts = (
            ("data.canaries", bool(self.canaries)),
            ("data.duplicates", self.duplicates.on),
            ("data.forget", self.forget.on),
            ("data.dedup", self.dedup.min_tokens is not None),
        )
        return [name for name, on in parts if on]

    def subset_problems(self) -> list[str]:
        c = Checks("data.subset", self.subset)
        if c.finite("fraction"):
            c.need(
                0.0 < self.subset.fraction < 1.0,
                "fraction",
                "must be in (0, 1): the share of the candidates each shadow model trains on (0.5 for LiRA)",
            )
        c.seed("seed")
        # deduplication would cut into the candidates, so that a member is no longer trained on whole
        others = self.text_edits() + (["data=grammar"] if self.source == "grammar" else [])
        if others:
            c.line(
                f"data.subset: cannot be combined with {', '.join(others)}; a shadow model trains on candidate "
                "sequences of a text corpus only"
            )
        return c.problems
