"""The held-out split, the nested training subsets and the token streams of a corpus.

The rule, fixed per corpus by `data.split_seed` (never by `seed`):
1. the documents are put in an order drawn from `split_seed`;
2. walking that order, whole documents go to validation until it holds `data.val_fraction` of the
   corpus's characters; every other document is in the training pool, in that same order;
3. each document is followed by the end-of-text token; the training set of size N is the first N
   tokens of the training pool's stream (or, with `data.train_offset`, the N after that many: text that
   no training set of a corpus-size sweep holds, for a reference model).
So validation is the same for every training size, and a smaller training set is a prefix of a larger
one (the 4k-token set is inside the 16k-token set). Canaries and held-aside sequences are then planted in
it, and last, with data.dedup, repeated text is removed from it (gptfit.data.dedup).

For the grammar (one sentence per document, with repeats), a held-out sentence that also occurs in the
training pool is dropped from validation, so no held-out sentence is ever seen in training at any size.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gptfit.config import DataConfig, EvalConfig, ModelConfig
from gptfit.data.audit import AuditSet, draw_audit, plant_audit
from gptfit.data.canaries import make_canaries, plant
from gptfit.data.dedup import deduplicate, moved
from gptfit.data.duplicates import Planted, cut, hold_aside, take
from gptfit.data.duplicates import plant as plant_duplicates
from gptfit.data.sources import load_documents
from gptfit.data.subset import Subset, draw
from gptfit.data.tokenizer import symbol_tokenizer, token_byte_lengths, tokenizer_hash, train_bpe
from gptfit.data.uniform import UniformSet, draw_sequences, joined, set_hash
from gptfit.errors import UserError
from gptfit.files import atomic
from gptfit.model.loading import load_tokenizer, pretrained_path


@dataclass
class Corpus:
    train: np.ndarray  # [train_tokens] int64, the training set
    val: np.ndarray  # [val tokens] int64, all held-out text
    eot_id: int
    tokenizer: object
    token_bytes: np.ndarray  # [vocab] UTF-8 bytes per token id
    corpus_hash: str
    tokenizer_hash: str
    pool_tokens: int  # tokens available for training
    n_train_docs: int
    n_val_docs: int
    canaries: list = field(default_factory=list)  # planted secrets (gptfit.data.canaries.Canary)
    train_documents: list = field(default_factory=list)  # the documents wholly inside `train`, in order
    val_documents: list = field(default_factory=list)  # the held-out documents, in the order of `val`
    val_dropped: int = 0  # grammar: held-out sentences dropped because they also occur in the training pool
    planted: list = field(default_factory=list)  # data.duplicates: gptfit.data.duplicates.Planted, one per count
    aside: np.ndarray | None = None  # data.duplicates: [n, L] held-aside sequences never planted (count 0)
    forgotten: object | None = None  # data.forget: the Planted group seen only up to data.forget.until_step
    subset: Subset | None = None  # data.subset: the candidate sequences and which of them are trained on
    dedup_removed: int = 0  # data.dedup: training tokens that deduplication removed
    uniform: UniformSet | None = None  # data=uniform: the sequences of both sides
    audit: AuditSet | None = None  # data.audit: the audit sequences and which of them were planted


def split_documents(
    docs: list[str], split_seed: int, val_fraction: float, key: str = "data"
) -> tuple[list[str], list[str]]:
    """Return (training pool, held-out) documents by the rule in the module docstring."""
    if len(docs) < 2:
        raise UserError(
            f"{key}: the corpus has a single document, so none can be held out; "
            f"give more files or use {key}.sample_by=paragraph or line"
        )
    order = list(range(len(docs)))
    random.Random(split_seed).shuffle(order)
    budget = val_fraction * sum(len(d) for d in docs)
    val_idx, held = set(), 0
    for i in order:
        if held >= budget:
            break
        val_idx.add(i)
        held += len(docs[i])
    if len(val_idx) == len(docs):  # always keep something to train on
        val_idx.discard(order[-1])
    pool = [docs[i] for i in order if i not in val_idx]
    val = [docs[i] for i in order if i in val_idx]
    return pool, val


def drop_seen(pool: list[str], val: list[str]) -> tuple[list[str], int]:
    """(the held-out documents that do not occur in the training pool, how many were dropped)."""
    seen = set(pool)
    kept = [d for d in val if d not in seen]
    return kept, len(val) - len(kept)


def corpus_hash(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def encode_stream(tokenizer, docs: list[str], eot_id: int, cache_dir: str, tag: str) -> np.ndarray:
    """Documents joined with end-of-text tokens, cached by the tokenizer and text hashes."""
    path = Path(cache_dir).expanduser() / "streams" / f"{tag}.npy"
    if path.exists():
        return np.load(path)
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((t for doc in ids for t in (*doc, eot_id)), dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        np.save(tmp, stream)
    return stream


def run_corpus(model: ModelConfig, data: DataConfig, eval: EvalConfig) -> Corpus:
    """A run's corpus: tokenized by the pretrained model's tokenizer, or by one trained on it, with held-out
    text of at least one window."""
    path = pretrained_path(model)
    tokenizer = load_tokenizer(path, model.trust_remote_code) if path else None
    corpus = load_corpus(data, tokenizer, eval.prefix_tokens + eval.suffix_tokens)
    if len(corpus.val) < model.block_size:
        raise UserError(
            f"data.val_fraction={data.val_fraction}: the held-out text has {len(corpus.val)} tokens, "
            f"less than one window of model.block_size={model.block_size}; raise it"
        )
    if len(corpus.train) < model.block_size:  # only deduplication shrinks it below data.train_tokens
        raise UserError(
            f"data.dedup.min_tokens={data.dedup.min_tokens}: deduplication left {len(corpus.train)} of "
            f"{len(corpus.train) + corpus.dedup_removed} training tokens, less than one window of "
            f"model.block_size={model.block_size}; raise data.dedup.min_tokens or use a corpus that repeats less"
        )
    return corpus


def load_corpus(data: DataConfig, tokenizer=None, sequence_length: int = 64) -> Corpus:
    """Load, split and tokenize; `tokenizer` is the pretrained model's, or None to train a BPE.
    sequence_length: the length of the duplication ladder's and data.subset's sequences (eval.prefix_tokens
    + suffix_tokens). The corpus is built by CORPUS_STEPS in order, then deduplicated (data.dedup)."""
    if data.source == "uniform":
        return uniform_corpus(data, tokenizer)
    draft = Draft(data, sequence_length, tokenizer)
    for step in CORPUS_STEPS:
        step(draft)
    corpus = draft.corpus()
    dedup = getattr(data, "dedup", None)
    if not getattr(dedup, "min_tokens", None):
        return corpus
    return deduplicated(corpus, dedup.min_tokens, dedup.keep, draft.pool_stream, draft.complete, sequence_length)


@dataclass
class Draft:
    """A corpus being built: what each step of CORPUS_STEPS reads and leaves for the next."""

    data: DataConfig
    sequence_length: int
    tokenizer: object = None
    documents: list[str] = field(default_factory=list)
    documents_hash: str = ""
    tokenizer_hash: str = ""
    pool: list[str] = field(default_factory=list)  # the training pool's documents, in split order
    val: list[str] = field(default_factory=list)
    aside_documents: list[str] = field(default_factory=list)  # held aside for the ladder and the forget set
    dropped: int = 0
    eot_id: int = -1
    key: str = ""  # the streams' cache key
    pool_stream: np.ndarray | None = None
    val_stream: np.ndarray | None = None
    train: np.ndarray | None = None
    complete: slice = field(default_factory=lambda: slice(0, 0))  # the pool's documents wholly inside `train`
    subset: Subset | None = None
    canaries: list = field(default_factory=list)
    planted: list = field(default_factory=list)
    aside: np.ndarray | None = None
    forgotten: Planted | None = None
    audit: AuditSet | None = None

    def corpus(self) -> Corpus:
        return Corpus(
            train=self.train,
            val=self.val_stream,
            eot_id=self.eot_id,
            tokenizer=self.tokenizer,
            token_bytes=token_byte_lengths(self.tokenizer),
            corpus_hash=self.documents_hash,
            tokenizer_hash=self.tokenizer_hash,
            pool_tokens=len(self.pool_stream),
            n_train_docs=len(self.pool),
            n_val_docs=len(self.val),
            canaries=self.canaries,
            train_documents=self.pool[self.complete],
            val_documents=self.val,
            val_dropped=self.dropped,
            planted=self.planted,
            aside=self.aside,
            forgotten=self.forgotten,
            subset=self.subset,
            audit=self.audit,
        )


def part_on(data, name: str):
    """The config section `name` of `data` where it is there and on, else None (eval.general's corpora have
    no planted parts)."""
    part = getattr(data, name, None)
    return part if part is not None and part.on else None


def read_source(d: Draft) -> None:
    d.documents = load_documents(d.data, d.data.cache_dir)
    d.documents_hash = corpus_hash(d.documents)
    d.pool, d.val = split_documents(d.documents, d.data.split_seed, d.data.val_fraction)


def hold_aside_text(d: Draft) -> None:
    """Text for the duplication ladder and the forget set, taken out of the pool before anything else."""
    dup, forget = part_on(d.data, "duplicates"), part_on(d.data, "forget")
    if dup is None and forget is None:
        return
    n_dup = (len(dup.counts) + 1) * dup.per_count if dup is not None else 0
    needed = (n_dup + (forget.sequences if forget is not None else 0)) * d.sequence_length
    d.pool, d.aside_documents = hold_aside(d.pool, d.data.split_seed, needed)


def drop_seen_sentences(d: Draft) -> None:
    """On the grammar: no held-out sentence that the training pool also holds."""
    if d.data.source != "grammar":
        return
    d.val, d.dropped = drop_seen(d.pool, d.val)
    if not d.val:
        raise UserError(
            f"data.grammar: all {d.dropped} held-out sentences also occur in training; the language is "
            "too small to hold any out: raise data.grammar.n_nouns, n_verbs or max_depth"
        )


def tokenize(d: Draft) -> None:
    """The tokenizer (a BPE trained on the pool where the model brings none) and both streams, cached."""
    data = d.data
    if d.tokenizer is None:
        d.tokenizer = train_bpe(d.pool, data.vocab_size, data.cache_dir)
    d.eot_id = d.tokenizer.eos_token_id
    if d.eot_id is None:
        raise UserError("model: the tokenizer has no end-of-text (eos) token to join documents with")
    d.tokenizer_hash = tokenizer_hash(d.tokenizer)
    d.key = f"{d.documents_hash}-{d.tokenizer_hash}-{data.split_seed}-{data.val_fraction}"
    if d.aside_documents:  # the pool is smaller by the held-aside text
        d.key += f"-aside{len(d.aside_documents)}"
    d.pool_stream = encode_stream(d.tokenizer, d.pool, d.eot_id, data.cache_dir, f"{d.key}-train")
    val_tag = f"{d.key}-val" + ("-unseen" if d.dropped else "")
    d.val_stream = encode_stream(d.tokenizer, d.val, d.eot_id, data.cache_dir, val_tag)


def take_training_tokens(d: Draft) -> None:
    """The first data.train_tokens of the pool's stream (after data.train_offset), and the documents it holds
    whole (each document is followed by an end-of-text token)."""
    data, stream, eot = d.data, d.pool_stream, d.eot_id
    start = getattr(data, "train_offset", 0)
    if start + data.train_tokens > len(stream):
        larger = "raise data.grammar.n_sentences" if data.source == "grammar" else "use a larger corpus"
        skipped = f", {start} of them skipped by data.train_offset," if start else ""
        raise UserError(
            f"data.train_tokens={data.train_tokens}: the corpus has only {len(stream)} training tokens"
            f"{skipped} after holding out {len(d.val_stream)}; lower data.train_tokens or {larger}"
        )
    d.train = stream[start : start + data.train_tokens]
    ended_before = int(np.count_nonzero(stream[:start] == eot))
    first = ended_before if start == 0 or stream[start - 1] == eot else ended_before + 1
    d.complete = slice(first, ended_before + int(np.count_nonzero(d.train == eot)))


def draw_subset(d: Draft) -> None:
    """data.subset: the candidates, each trained on as a document of its own."""
    subset = part_on(d.data, "subset")
    if subset is not None:
        d.train, d.subset = draw(d.train, d.eot_id, d.sequence_length, subset.fraction, subset.seed)
        d.complete = slice(0, 0)


def plant_canaries(d: Draft) -> None:
    d.canaries = make_canaries(d.data.canaries, d.data.split_seed)
    if d.canaries:
        d.train = plant(d.train, d.canaries, d.tokenizer, d.eot_id, d.data.split_seed)


def plant_audit_sequences(d: Draft) -> None:
    """data.audit: random-token sequences, each planted once with its own coin's probability."""
    audit = getattr(d.data, "audit", None)
    if audit is not None and audit.sequences:
        d.audit = draw_audit(audit, len(d.tokenizer), d.eot_id)
        d.train = plant_audit(d.train, d.audit, d.eot_id, audit.seed)


def plant_held_aside(d: Draft) -> None:
    """The duplication ladder and the forget set, from the held-aside text."""
    if d.aside_documents:
        tag = f"{d.key}-aside"
        stream = encode_stream(d.tokenizer, d.aside_documents, d.eot_id, d.data.cache_dir, tag)
        d.train, d.planted, d.aside, d.forgotten = plant_aside(d.train, stream, d.data, d.eot_id, d.sequence_length)


# How a corpus is built from its source, in order; deduplication (data.dedup) comes after, on the result.
CORPUS_STEPS = (
    read_source,
    hold_aside_text,
    drop_seen_sentences,
    tokenize,
    take_training_tokens,
    draw_subset,
    plant_canaries,
    plant_audit_sequences,
    plant_held_aside,
)


def uniform_corpus(data: DataConfig, tokenizer=None) -> Corpus:
    """data=uniform: its sequences joined by end-of-text, and its symbols' tokenizer (`tokenizer`: a pretrained
    model's, which must be that one: a model that starts from another vocabulary cannot read the symbols)."""
    symbols = symbol_tokenizer(data.uniform.vocab)
    if tokenizer is not None and tokenizer_hash(tokenizer) != tokenizer_hash(symbols):
        raise UserError(
            "data=uniform: the model starts from a pretrained model whose tokenizer is not the symbols' one; "
            "train from scratch (model=tiny, model.init_from=null) or start from a data=uniform run of the "
            "same data.uniform.vocab"
        )
    drawn, eot_id = draw_sequences(data.uniform), symbols.eos_token_id
    documents = symbols.batch_decode(drawn.train.tolist())
    return Corpus(
        train=joined(drawn.train, eot_id),
        val=joined(drawn.val, eot_id),
        eot_id=eot_id,
        tokenizer=symbols,
        token_bytes=token_byte_lengths(symbols),
        corpus_hash=set_hash(data.uniform),
        tokenizer_hash=tokenizer_hash(symbols),
        pool_tokens=len(drawn.train) * (drawn.length + 1),
        n_train_docs=len(drawn.train),
        n_val_docs=len(drawn.val),
        train_documents=documents,
        val_documents=symbols.batch_decode(drawn.val.tolist()),
        uniform=drawn,
    )


def deduplicated(
    corpus: Corpus, min_tokens: int, keep: str, pool_stream: np.ndarray, complete: slice, length: int
) -> Corpus:
    """The corpus with data.dedup applied to its training stream (gptfit.data.dedup), after everything was
    planted: the planted copies that did not stay whole are dropped from their positions and the others
    moved (each Planted keeps its planned `copies`: the ladder's groups stay "planted 64 times"), and
    train_documents keeps those still whole somewhere in the stream (`complete`: their indices in the pool,
    whose stream is `pool_stream`)."""
    kept = deduplicate(corpus.train, min_tokens, corpus.eot_id, keep)
    train = corpus.train[kept]

    def documents(stream: np.ndarray) -> list[np.ndarray]:  # each document's tokens, with its end-of-text
        return np.split(stream.astype(np.int64, copy=False), np.flatnonzero(stream == corpus.eot_id) + 1)

    whole = {d.tobytes() for d in documents(train)}
    pairs = zip(corpus.train_documents, documents(pool_stream)[complete])
    train_documents = [d for d, ids in pairs if ids.tobytes() in whole]

    def move(group: Planted | None) -> Planted | None:
        return replace(group, positions=moved(group.positions, kept, length)) if group is not None else None

    return replace(
        corpus,
        train=train,
        planted=[move(g) for g in corpus.planted],
        forgotten=move(corpus.forgotten),
        train_documents=train_documents,
        dedup_removed=int(len(kept) - kept.sum()),
    )


def plant_aside(train: np.ndarray, aside: np.ndarray, data: DataConfig, eot_id: int, length: int) -> tuple:
    """(the training stream with the held-aside sequences planted, the ladder's Planted groups, the
    never-planted count-0 sequences, the forgotten Planted group): all planted in one pass."""
    dup, forget = part_on(data, "duplicates"), part_on(data, "forget")
    n_dup = (len(dup.counts) + 1) * dup.per_count if dup is not None else 0
    groups, baseline, forgotten = [], None, None  # (copies, sequences): the ladder's counts, then the forgotten set
    if dup is not None:
        ladder = cut(aside, length, list(dup.counts), dup.per_count)
        groups += [(count, ladder[count]) for count in dup.counts]
        baseline = ladder[0]
    if forget is not None:
        groups.append((forget.copies, take(aside, length, n_dup, forget.sequences, "data.forget.sequences")))
    train, planted = plant_duplicates(train, groups, eot_id, data.split_seed)
    if forget is not None:
        forgotten = planted.pop()
    return train, planted, baseline, forgotten


def ngram_overlap(train: np.ndarray, val: np.ndarray, n: int = 8) -> float:
    """Share of held-out token n-grams that also occur in the training tokens (a leak check)."""
    if len(val) < n or len(train) < n:
        return 0.0

    def grams(a: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(a.astype(np.int64), n)
        # Each n-gram as one row of bytes, so np.isin compares whole n-grams exactly.
        return np.ascontiguousarray(windows).view(np.dtype((np.void, 8 * n))).ravel()

    return float(np.isin(grams(val), grams(train)).mean())
