"""The general corpora of eval.general: the held-out text of each, tokenized with the run's tokenizer.

A general corpus is read and split by the rules of a training corpus (gptfit.data.sources,
gptfit.data.corpus.split_documents), with its own split_seed and val_fraction, and only its held-out
documents are kept: with the defaults, the base model's corpus yields text the base never trained on. The
stream is cached under the tag a training corpus gives its held-out stream, so a general corpus that is
also the run's corpus (or the base's) is encoded once. Bits per byte need no table of their own: the
tokenizer is the run's, so the run's `Corpus.token_bytes` holds every token's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptfit.config import GeneralCorpus
from gptfit.data.corpus import corpus_hash, encode_stream, split_documents
from gptfit.data.sources import load_documents
from gptfit.data.tokenizer import tokenizer_hash
from gptfit.errors import UserError


@dataclass
class GeneralText:
    name: str
    val: np.ndarray  # [held-out tokens] int64: the held-out documents, each followed by end-of-text
    n_docs: int  # held-out documents


def general_texts(
    corpora: list[GeneralCorpus], tokenizer, eot_id: int, cache_dir: str, block_size: int
) -> list[GeneralText]:
    """Each corpus's held-out token stream, in order. A corpus that cannot be read, is empty, or holds less
    held-out text than one window of `block_size` tokens is a UserError naming its eval.general entry."""
    if not corpora:  # a run from scratch: nothing to read, not even the tokenizer's hash
        return []
    texts = []
    t_hash = tokenizer_hash(tokenizer)
    for i, corpus in enumerate(corpora):
        key = f"eval.general[{i}]"
        docs = load_documents(corpus, cache_dir, key)
        _, val = split_documents(docs, corpus.split_seed, corpus.val_fraction, key)
        # The tag of a training corpus's held-out stream (gptfit.data.corpus.load_corpus): the same text.
        tag = f"{corpus_hash(docs)}-{t_hash}-{corpus.split_seed}-{corpus.val_fraction}-val"
        stream = encode_stream(tokenizer, val, eot_id, cache_dir, tag)
        if len(stream) < block_size:
            raise UserError(
                f"{key}.val_fraction={corpus.val_fraction}: the held-out text of {corpus.name!r} has "
                f"{len(stream)} tokens, less than one window of model.block_size={block_size}; raise it "
                "or give the corpus more text"
            )
        texts.append(GeneralText(corpus.name, stream, len(val)))
    return texts
