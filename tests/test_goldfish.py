"""Goldfish loss (train.goldfish): the mask depends on the h tokens before each token alone, drops about 1/k,
reaches the training labels, and the per-sequence table says how much of each suffix it drops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gptfit.config import ConfigError, validate
from gptfit.core.lm_loss import IGNORE_INDEX
from gptfit.data.corpus import load_corpus
from gptfit.data.goldfish import goldfish_mask
from gptfit.data.windows import EpochWindows, RandomWindows
from gptfit.measures.table import SequenceTable
from gptfit.model.loading import build_model
from gptfit.run.training import make_evaluator, make_windows
from tests.conftest import TINY, error_lines, run_cli


def random_stream(n: int, seed: int = 0, vocab: int = 50_000) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.mark.parametrize("h", [1, 7, 13])
def test_copies_of_a_passage_drop_the_same_tokens_wherever_they_are(h):
    stream, passage = random_stream(5000), random_stream(200, seed=1)
    starts = [123, 3001]
    for start in starts:
        stream[start : start + len(passage)] = passage
    mask = goldfish_mask(stream, 4, h)
    first, second = (mask[s + h : s + len(passage)] for s in starts)  # from h on: the context is inside the copy
    assert np.array_equal(first, second) and first.any()
    assert np.array_equal(first, goldfish_mask(passage, 4, h)[h:])  # the passage on its own agrees too


def test_with_context_document_every_copy_of_a_short_document_drops_the_same_tokens():
    eot, h, k = 50_000, 4, 2  # an end-of-text id outside random_stream's vocabulary
    document = np.append(random_stream(20, seed=1), eot)  # [21]: a short document with its end-of-text
    stream = random_stream(400)
    starts = [57, 301]  # after different text
    for start in starts:
        stream[start - 1] = eot
        stream[start : start + len(document)] = document
    by_document = goldfish_mask(stream, k, h, separator=eot)
    first, second = (by_document[s : s + len(document)] for s in starts)
    assert np.array_equal(first, second) and first.any() and not first[:h].any()
    assert np.array_equal(first, goldfish_mask(document, k, h))  # the document on its own agrees too
    by_stream = goldfish_mask(stream, k, h)
    first, second = (by_stream[s : s + len(document)] for s in starts)
    assert not np.array_equal(first[:h], second[:h])  # its first h tokens hash the text before each copy
    assert np.array_equal(first[h:], second[h:])


def test_context_document_drops_what_stream_drops_where_the_context_holds_no_end_of_text():
    eot, h = 7, 5
    for seed in range(20):
        stream = random_stream(300, seed, vocab=50)
        rows = stream.reshape(3, 100)  # each row on its own, as the table's sequences are
        for tokens in (stream, rows):
            by_stream, by_document = goldfish_mask(tokens, 3, h), goldfish_mask(tokens, 3, h, separator=eot)
            contexts = np.lib.stride_tricks.sliding_window_view(tokens, h, axis=-1)[..., :-1, :]  # [..., n - h, h]
            expected = by_stream[..., h:] & (contexts != eot).all(-1)
            assert np.array_equal(by_document[..., h:], expected) and not by_document[..., :h].any()


@pytest.mark.parametrize("k", [2, 4, 7])
def test_about_one_in_k_tokens_is_dropped(k):
    n, h = 200_000, 13
    share = goldfish_mask(random_stream(n, seed=k), k, h)[h:].mean()
    p = 1 / k
    half_width = 3.29 * math.sqrt(p * (1 - p) / (n - h))  # the binomial's 99.9% interval
    assert abs(share - p) <= half_width


@pytest.mark.parametrize("h", [1, 5, 13, 40])
def test_a_token_with_fewer_than_h_tokens_before_it_is_never_dropped(h):
    for seed in range(20):
        assert not goldfish_mask(random_stream(100, seed), 2, h)[:h].any()
    assert not goldfish_mask(random_stream(h, seed=3), 2, h).any()  # a stream no longer than h: nothing


@pytest.mark.parametrize("kind", [RandomWindows, EpochWindows])
def test_window_labels_are_ignored_exactly_at_the_dropped_stream_positions(kind):
    stream = random_stream(1000)
    mask = goldfish_mask(stream, 3, 5)
    windows = kind(stream, 32, 50, seed=0)
    windows.drop(mask)
    for i in range(len(windows)):
        item, offset = windows[i], windows.offset(i)
        truth = torch.from_numpy(stream[offset : offset + 32])
        dropped = torch.from_numpy(mask[offset : offset + 32])
        assert torch.equal(item["input_ids"], truth)
        assert torch.equal(item["labels"] == IGNORE_INDEX, dropped)
        assert torch.equal(item["labels"][~dropped], truth[~dropped])
    with pytest.raises(ValueError):
        windows.drop(mask[:-1])


def test_a_goldfish_config_gives_training_windows_with_ignored_labels(make_config):
    cfg = make_config([*TINY, "train.goldfish.k=4"])
    corpus = load_corpus(cfg.data)
    windows = make_windows(cfg, corpus)
    mask = goldfish_mask(corpus.train, 4, cfg.train.goldfish.h)
    ignored = 0
    for i in range(20):
        offset, labels = windows.offset(i), windows[i]["labels"]
        assert np.array_equal(labels.numpy() == IGNORE_INDEX, mask[offset : offset + cfg.model.block_size])
        ignored += int((labels == IGNORE_INDEX).sum())
    assert ignored > 0
    plain = make_windows(make_config(TINY), corpus)
    assert not any((plain[i]["labels"] == IGNORE_INDEX).any() for i in range(20))


def test_context_document_reaches_the_training_windows(make_config):
    cfg = make_config([*TINY, "train.goldfish.k=4", "train.goldfish.context=document"])
    corpus = load_corpus(cfg.data)
    windows = make_windows(cfg, corpus)
    mask = goldfish_mask(corpus.train, 4, cfg.train.goldfish.h, separator=corpus.eot_id)
    assert not np.array_equal(mask, goldfish_mask(corpus.train, 4, cfg.train.goldfish.h))
    for i in range(20):
        offset, labels = windows.offset(i), windows[i]["labels"]
        assert np.array_equal(labels.numpy() == IGNORE_INDEX, mask[offset : offset + cfg.model.block_size])


def test_a_goldfish_context_other_than_stream_or_document_is_one_config_problem(compose_cfg):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg([*TINY, "train.goldfish.context=documents"]))
    assert info.value.problems == ["train.goldfish.context='documents': one of stream, document"]


@pytest.mark.slow
@pytest.mark.parametrize("h", [4, 13])  # TINY's prefix is 8 tokens: the suffix's context inside it, or not
def test_the_table_says_what_share_of_each_suffix_is_dropped(make_config, h):
    cfg = make_config([*TINY, "train.goldfish.k=4", f"train.goldfish.h={h}"])
    corpus = load_corpus(cfg.data)
    evaluator = make_evaluator(cfg, corpus)
    torch.manual_seed(0)
    table = evaluator.table_only(build_model(cfg.model, corpus.tokenizer), 0, None, final=False)[1].table
    prefix, length = cfg.eval.prefix_tokens, cfg.eval.prefix_tokens + cfg.eval.suffix_tokens
    tokens = np.array(table["tokens"].to_pylist())  # [rows, L]
    column = np.array(table["goldfish_dropped"].to_pylist())
    if h <= prefix:  # the sequence's own tokens hold every suffix token's context
        expected = goldfish_mask(tokens, 4, h)[:, prefix:].mean(1)
    else:  # the stream's mask at the sequence's place
        streams = {"train": goldfish_mask(corpus.train, 4, h), "val": goldfish_mask(corpus.val, 4, h)}
        splits, offsets = table["split"].to_pylist(), table["offset"].to_pylist()
        expected = [streams[s][o + prefix : o + length].mean() for s, o in zip(splits, offsets)]
    assert np.allclose(column, expected) and column.max() > 0
    assert make_evaluator(make_config(TINY), corpus).measure_of(SequenceTable).goldfish_dropped is None  # off


def test_a_goldfish_k_below_2_is_one_clear_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("+experiment=tiny_corpus", "train.goldfish.k=1", f"hydra.run.dir={run_dir}")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "train.goldfish.k" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()
