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


def split_documents(docs: list[str], split_seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """Return (training pool, held-out) documents by the rule in the module docstring."""
    if len(docs) < 2:
        raise UserError(
            "data: the corpus has a single document, so none can be held out; "
            "give more files or use data.sample_by=paragraph or line"
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
    + suffix_tokens)."""
    if data.source == "uniform":
        return uniform_corpus(data, tokenizer)
    docs = load_documents(data)
    pool, val = split_documents(docs, data.split_seed, data.val_fraction)
    dup, forget = getattr(data, "duplicates", None), getattr(data, "forget", None)
    n_dup = (len(dup.counts) + 1) * dup.per_count if dup is not None else 0
    aside_docs: list[str] = []
    if dup is not None or forget is not None:
        needed = (n_dup + (forget.sequences if forget is not None else 0)) * sequence_length
        pool, aside_docs = hold_aside(pool, data.split_seed, needed)
    dropped = 0
    if data.source == "grammar":
        val, dropped = drop_seen(pool, val)
        if not val:
            raise UserError(
                f"data.grammar: all {dropped} held-out sentences also occur in training; the language is "
                "too small to hold any out: raise data.grammar.n_nouns, n_verbs or max_depth"
            )
    if tokenizer is None:
        tokenizer = train_bpe(pool, data.vocab_size, data.cache_dir)
    eot_id = tokenizer.eos_token_id
    if eot_id is None:
        raise UserError("model: the tokenizer has no end-of-text (eos) token to join documents with")
    c_hash, t_hash = corpus_hash(docs), tokenizer_hash(tokenizer)
    key = f"{c_hash}-{t_hash}-{data.split_seed}-{data.val_fraction}"
    if aside_docs:  # the pool is smaller by the held-aside text
        key += f"-aside{len(aside_docs)}"
    pool_stream = encode_stream(tokenizer, pool, eot_id, data.cache_dir, f"{key}-train")
    val_tag = f"{key}-val" + ("-unseen" if dropped else "")
    val_stream = encode_stream(tokenizer, val, eot_id, data.cache_dir, val_tag)
    start = getattr(data, "train_offset", 0)
    if start + data.train_tokens > len(pool_stream):
        larger = "raise data.grammar.n_sentences" if data.source == "grammar" else "use a larger corpus"
        skipped = f", {start} of them skipped by data.train_offset," if start else ""
        raise UserError(
            f"data.train_tokens={data.train_tokens}: the corpus has only {len(pool_stream)} training tokens"
            f"{skipped} after holding out {len(val_stream)}; lower data.train_tokens or {larger}"
        )
    train = pool_stream[start : start + data.train_tokens]
    # Each document is followed by an end-of-text token: the complete documents of the training set.
    ended_before = int(np.count_nonzero(pool_stream[:start] == eot_id))
    first = ended_before if start == 0 or pool_stream[start - 1] == eot_id else ended_before + 1
    complete = slice(first, ended_before + int(np.count_nonzero(train == eot_id)))
    subset = None
    if getattr(data, "subset", None) is not None:  # the candidates, each trained on as a document of its own
        train, subset = draw(train, eot_id, sequence_length, data.subset.fraction, data.subset.seed)
        complete = slice(0, 0)
    canaries = make_canaries(data.canaries, data.split_seed)
    if canaries:
        train = plant(train, canaries, tokenizer, eot_id, data.split_seed)
    planted, aside, forgotten = [], None, None
    if aside_docs:
        aside_stream = encode_stream(tokenizer, aside_docs, eot_id, data.cache_dir, f"{key}-aside")
        train, planted, aside, forgotten = plant_aside(train, aside_stream, data, eot_id, sequence_length)
    corpus = Corpus(
        train=train,
        val=val_stream,
        eot_id=eot_id,
        tokenizer=tokenizer,
        token_bytes=token_byte_lengths(tokenizer),
        corpus_hash=c_hash,
        tokenizer_hash=t_hash,
        pool_tokens=len(pool_stream),
        n_train_docs=len(pool),
        n_val_docs=len(val),
        canaries=canaries,
        train_documents=pool[complete],
        val_documents=val,
        val_dropped=dropped,
        planted=planted,
        aside=aside,
        forgotten=forgotten,
        subset=subset,
    )
    min_tokens = getattr(getattr(data, "dedup", None), "min_tokens", None)
    return deduplicated(corpus, min_tokens, pool_stream, complete, sequence_length) if min_tokens else corpus


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


def deduplicated(corpus: Corpus, min_tokens: int, pool_stream: np.ndarray, complete: slice, length: int) -> Corpus:
    """The corpus with data.dedup applied to its training stream (gptfit.data.dedup), after everything was
    planted: the planted copies that did not stay whole are dropped from their positions and the others
    moved (each Planted keeps its planned `copies`: the ladder's groups stay "planted 64 times"), and
    train_documents keeps those still whole somewhere in the stream (`complete`: their indices in the pool,
    whose stream is `pool_stream`)."""
    kept = deduplicate(corpus.train, min_tokens, corpus.eot_id)
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
    dup, forget = data.duplicates, data.forget
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
