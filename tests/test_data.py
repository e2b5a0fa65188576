"""Corpora: the fixed held-out split, nested training subsets, the three sources and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from gptfit.config import DataConfig
from gptfit.data.corpus import load_corpus, ngram_overlap, split_documents
from gptfit.data.sources import python_docs
from gptfit.data.windows import RandomWindows, fixed_windows
from gptfit.errors import UserError


def data_cfg(cache_dir, **kw):
    return DataConfig(cache_dir=cache_dir, vocab_size=512, **kw)


def test_embedded_corpus_is_the_pydoc_topics():
    docs = python_docs()
    assert len(docs) > 50
    assert 400_000 < sum(map(len, docs)) < 600_000


def test_validation_is_whole_documents_fixed_by_split_seed():
    docs = [f"document number {i} " * (i % 7 + 1) for i in range(100)]
    pool, val = split_documents(docs, split_seed=3, val_fraction=0.2)
    assert set(pool).isdisjoint(val) and len(pool) + len(val) == 100
    assert set(val) <= set(docs)  # never cut mid-document
    share = sum(map(len, val)) / sum(map(len, docs))
    assert 0.2 <= share < 0.3
    assert split_documents(docs, 3, 0.2) == (pool, val)
    assert split_documents(docs, 4, 0.2)[1] != val


def test_training_sizes_are_nested_and_share_one_validation_set(cache_dir):
    small = load_corpus(data_cfg(cache_dir, train_tokens=2000))
    large = load_corpus(data_cfg(cache_dir, train_tokens=8000))
    assert len(small.train) == 2000 and len(large.train) == 8000
    assert np.array_equal(large.train[:2000], small.train)
    assert np.array_equal(small.val, large.val)
    assert small.tokenizer_hash == large.tokenizer_hash  # one tokenizer per corpus, whatever the size
    assert (small.train == small.eot_id).sum() >= 1  # documents are joined with end-of-text


def test_held_out_text_barely_overlaps_training_text(cache_dir):
    corpus = load_corpus(data_cfg(cache_dir, train_tokens=16000))
    assert ngram_overlap(corpus.train, corpus.val) < 0.2
    assert ngram_overlap(corpus.train, corpus.train[:500]) == 1.0
    assert ngram_overlap(corpus.train, np.arange(10**6, 10**6 + 100)) == 0.0


def test_text_files_through_datasets(tmp_path, cache_dir):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(3):
        paragraphs = [f"Paragraph {j} of file {i}. The quick brown fox jumps over the lazy dog." for j in range(30)]
        (folder / f"f{i}.txt").write_text("\n\n".join(paragraphs))
    corpus = load_corpus(data_cfg(cache_dir, source="text", path=str(folder), train_tokens=500, val_fraction=0.1))
    assert corpus.n_train_docs + corpus.n_val_docs == 90
    assert "quick brown fox" in corpus.tokenizer.decode(corpus.train[:200].tolist())


def test_paragraphs_split_at_lines_that_hold_only_whitespace(tmp_path, cache_dir):
    # As the common word-level benchmark files are written: a paragraph, then a line of spaces.
    paragraphs = [f" = Section {j} = \n The fox number {j} jumps over the lazy dog {j} times ." for j in range(40)]
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" \n".join(p + "\n" for p in paragraphs) + " \n")
    from gptfit.data.sources import text_files

    docs = [d for d in text_files(str(path), "paragraph") if d.strip()]
    assert docs == paragraphs
    corpus = load_corpus(data_cfg(cache_dir, source="text", path=str(path), train_tokens=300, val_fraction=0.1))
    assert corpus.n_train_docs + corpus.n_val_docs == 40


def test_hf_dataset_saved_to_disk(tmp_path, cache_dir):
    import datasets

    rows = [f"Record {i}: a sentence about record {i} and its neighbours." for i in range(200)]
    datasets.Dataset.from_dict({"body": rows, "id": list(range(200))}).save_to_disk(tmp_path / "ds")
    cfg = data_cfg(cache_dir, source="hf", path=str(tmp_path / "ds"), text_column="body", train_tokens=600)
    corpus = load_corpus(cfg)
    assert corpus.n_train_docs + corpus.n_val_docs == 200
    with pytest.raises(UserError, match="data.text_column='text'.*columns: body, id"):
        load_corpus(data_cfg(cache_dir, source="hf", path=str(tmp_path / "ds"), train_tokens=600))


@pytest.mark.parametrize(
    "make, kw, message",
    [
        (None, dict(path="/no/such/file.txt"), "no such file or folder"),
        ("empty", {}, "is empty"),
        ("binary", {}, "looks binary"),
        ("latin1", {}, "not UTF-8"),
        ("small", dict(train_tokens=10**7), "data.train_tokens=10000000: the corpus has only"),
    ],
)
def test_bad_corpora_get_a_clear_message(tmp_path, cache_dir, make, kw, message):
    path = tmp_path / "corpus.txt"
    contents = {
        "empty": b"\n\n  \n",
        "binary": b"\x00\x01\x02text" * 100,
        "latin1": ("caf\u00e9 au lait\n\n" * 200).encode("latin-1"),
        "small": b"a few words\n\nand a few more\n\n" * 50,
    }
    if make:
        path.write_bytes(contents[make])
    kw = {"path": str(path), "train_tokens": 100, **kw}
    with pytest.raises(UserError, match=message) as info:
        load_corpus(data_cfg(cache_dir, source="text", **kw))
    assert "\n" not in str(info.value)


def test_training_windows_are_reproducible_and_inside_the_stream():
    stream = np.arange(1000)
    a, b = RandomWindows(stream, 16, 50, seed=1), RandomWindows(stream, 16, 50, seed=1)
    assert all(np.array_equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(50))
    assert any(
        not np.array_equal(a[i]["input_ids"], RandomWindows(stream, 16, 50, 2)[i]["input_ids"]) for i in range(50)
    )
    for i in range(50):
        w = a[i]["input_ids"].numpy()
        assert len(w) == 16 and np.array_equal(w, np.arange(w[0], w[0] + 16))


def test_fixed_windows_cover_the_stream_evenly():
    w = fixed_windows(np.arange(100), 10, 5)
    assert w.shape == (5, 10) and w[0, 0] == 0 and w[-1, -1] == 99
    # With a stride, every window starts on a multiple of it (data=uniform: where a sequence starts).
    w = fixed_windows(np.arange(100), 10, 4, stride=11)
    assert w[:, 0].tolist() == [0, 33, 55, 88]
