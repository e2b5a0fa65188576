"""Tokenizers: a byte-level BPE per corpus for models trained from scratch, the model's own otherwise, and
data=uniform's symbols (one token a symbol, no text at all).

The BPE is trained on all of a corpus's non-held-out text (not on the training slice), so every size
of a corpus-size sweep uses the same tokenizer and its losses are in the same units. It is cached by
the hash of that text and the vocabulary size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gptfit.files import atomic

EOT = "<|endoftext|>"


def train_bpe(documents: list[str], vocab_size: int, cache_dir: str):
    """Return a `PreTrainedTokenizerFast` trained on `documents` (loaded from the cache when present)."""
    digest = hashlib.sha256()
    digest.update(f"bytelevel-bpe-v1:{vocab_size}".encode())
    for doc in documents:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\x00")
    path = Path(cache_dir).expanduser() / "tokenizers" / f"{digest.hexdigest()[:24]}.json"
    if path.exists():
        tok = Tokenizer.from_file(str(path))
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(documents, trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic(path) as tmp:  # a half-written cache file is never picked up
            tok.save(str(tmp))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, pad_token=EOT)


def symbol(i: int) -> str:
    """The text of data=uniform's symbol i: "s0", "s1", ...; words of a text prompt are none of them."""
    return f"s{i}"


def symbol_tokenizer(vocab: int):
    """A `PreTrainedTokenizerFast` with token i for symbol i (`symbol(i)`, whitespace-separated in text) and
    end-of-text as token `vocab`. It spells nothing else: encoding another word raises (`encode_text`)."""
    tok = Tokenizer(models.WordLevel({**{symbol(i): i for i in range(vocab)}, EOT: vocab}))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(EOT, special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, pad_token=EOT)


def encode_text(tokenizer, text: str) -> list[int] | None:
    """`text`'s token ids, or None when the tokenizer cannot spell it: data=uniform's symbols spell no words,
    and a WordLevel model without an unknown token raises a bare Exception for a word outside it."""
    try:
        return tokenizer.encode(text, add_special_tokens=False)
    except Exception as e:  # the tokenizers library's only error type here
        if "WordLevel" in str(e):
            return None
        raise


def tokenizer_hash(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for special tokens): the denominator of bits per byte."""
    n = len(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        # Byte-level BPE spells each byte as one character of its alphabet.
        lengths = np.array([len(t) for t in tokenizer.convert_ids_to_tokens(list(range(n)))], dtype=np.int64)
    else:
        lengths = np.array([len(tokenizer.decode([i]).encode("utf-8")) for i in range(n)], dtype=np.int64)
    lengths[list(tokenizer.all_special_ids)] = 0
    return lengths
