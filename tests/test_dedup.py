"""Exact-substring deduplication (data.dedup, Lee et al. 2022) as a specification: later copies of repeated
text go, first occurrences stay (keep=none: they go too), planted copies are followed to where they end up."""

from __future__ import annotations

import numpy as np
import pytest

from gptfit.config import ConfigError, validate
from gptfit.data.corpus import load_corpus, run_corpus
from gptfit.data.dedup import deduplicate, moved
from gptfit.data.duplicates import Planted, plant
from gptfit.metrics.sequences import exposure_columns, planted_side
from tests.conftest import TINY, error_lines, run_cli

EOT = 9  # the separator of the small streams below


def brute_force(stream: list[int], m: int, separator: int | None, keep: str = "first") -> list[bool]:
    """The rule of gptfit.data.dedup, one window at a time: a window whose text occurred at an earlier
    start (keep=none: at any other start) and holds no separator removes its m tokens; then a separator
    whose non-empty document went whole goes too."""
    n, seen, removed = len(stream), set(), [False] * len(stream)
    texts = [tuple(stream[i : i + m]) for i in range(n - m + 1)]
    for i, text in enumerate(texts):
        if separator in text:
            continue
        if text in seen or (keep == "none" and texts.count(text) > 1):
            removed[i : i + m] = [True] * m
        seen.add(text)
    start = 0
    for end, token in enumerate(stream):
        if token == separator:
            if end > start and all(removed[start:end]):
                removed[end] = True
            start = end + 1
    return [not r for r in removed]


def windows_of(stream: list[int], kept: list[bool], m: int) -> list[tuple[int, ...]]:
    """The texts of the windows of m original tokens that are kept whole and hold no separator."""
    return [
        tuple(stream[i : i + m])
        for i in range(len(stream) - m + 1)
        if all(kept[i : i + m]) and EOT not in stream[i : i + m]
    ]


@pytest.mark.parametrize("keep", ["first", "none"])
def test_deduplication_follows_the_rule_on_random_streams(keep):
    rng = np.random.default_rng(0)
    for case in range(200):
        n, vocab, m = int(rng.integers(1, 80)), int(rng.integers(2, 5)), int(rng.integers(2, 6))
        stream = rng.integers(0, vocab, n)
        separator = None
        if case % 2:  # half the cases with documents
            stream[rng.random(n) < 0.1] = EOT
            separator = EOT
        kept = deduplicate(stream, m, separator, keep)
        text = stream.tolist()
        assert kept.tolist() == brute_force(text, m, separator, keep), (text, m, separator)
        # What that guarantees: every window kept whole is its text's first occurrence (keep=none: its only
        # one), so no text of m tokens repeats among them.
        whole = windows_of(text, kept.tolist(), m)
        assert len(whole) == len(set(whole))
        for i in range(len(text) - m + 1):
            if all(kept[i : i + m]) and EOT not in text[i : i + m]:
                others = range(i) if keep == "first" else [j for j in range(len(text) - m + 1) if j != i]
                assert tuple(text[i : i + m]) not in {tuple(text[j : j + m]) for j in others}


def starts_of(stream: np.ndarray, span: np.ndarray) -> list[int]:
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(span))  # [n - len + 1, len]
    return np.flatnonzero((windows == span).all(1)).tolist()


@pytest.mark.parametrize("keep, left", [("none", 0), ("first", 1)])
def test_keep_none_strikes_every_copy_of_a_repeat_and_keep_first_leaves_exactly_one(keep, left):
    twice, thrice, short = np.arange(100, 106), np.arange(200, 208), np.arange(300, 303)  # 6, 8, 3 tokens
    filler = iter(np.arange(1000, 1100).reshape(-1, 5))  # text that repeats nothing
    parts = [twice, thrice, short, twice, thrice, short, thrice]
    stream = np.concatenate([piece for part in parts for piece in (next(filler), part)] + [next(filler)])
    kept = deduplicate(stream, 5, keep=keep)
    deduplicated = stream[kept]
    assert len(starts_of(deduplicated, twice)) == left and len(starts_of(deduplicated, thrice)) == left
    assert len(starts_of(deduplicated, short)) == 2  # shorter than min_tokens: not a repeat
    assert len(stream) - kept.sum() == (2 - left) * len(twice) + (3 - left) * len(thrice)
    copies = starts_of(stream, thrice)
    assert moved([copies], kept, len(thrice)) == [copies[:left]]  # keep=first: the first copy, where it was


def test_a_first_occurrence_overlapping_a_later_one_loses_the_overlap():
    # "a b" repeats at 3, which removes 3 and 4; "b c" first occurs at 4, so only its copy at 7 goes
    # whole, and its text is left nowhere: the rule looks at windows (gptfit.data.dedup's docstring).
    a, b, c, z = 1, 2, 3, 4
    stream = np.array([a, b, z, a, b, c, z, b, c])
    assert deduplicate(stream, 2).tolist() == [True, True, True, False, False, True, True, False, False]


def test_repeats_never_cross_an_end_of_text_and_an_emptied_document_goes_with_its_end_of_text():
    stream = np.array([1, 2, EOT, 1, 2, EOT, 3, 1, 2, EOT, 4, 5, EOT, 6, EOT, 4, 5])
    kept = deduplicate(stream, 2, EOT)
    assert stream[kept].tolist() == [1, 2, EOT, 3, EOT, 4, 5, EOT, 6, EOT]
    # Without one, "2 EOT" and "EOT 4" are text like any other: documents lose their ends and run together.
    assert stream[deduplicate(stream, 2)].tolist() == [1, 2, EOT, 3, 4, 5, EOT, 6]


def test_a_planted_ladder_is_left_with_one_copy_of_each_sequence_where_its_positions_say():
    rng = np.random.default_rng(1)
    stream = rng.integers(10, 1000, 20_000)
    stream[rng.random(len(stream)) < 0.05] = EOT
    length = 16
    groups = [(copies, rng.integers(1000, 2000, (3, length))) for copies in (1, 4, 16)]
    train, planted = plant(stream, groups, EOT, seed=0)
    kept = deduplicate(train, 8, EOT)
    deduplicated = train[kept]
    # Each later copy goes whole, with its end-of-text; the ordinary random text repeats nothing of 8 tokens.
    assert len(train) - kept.sum() == sum(3 * (copies - 1) * (length + 1) for copies, _ in groups)
    windows = np.lib.stride_tricks.sliding_window_view(deduplicated, length)
    for group in planted:
        for tokens, positions in zip(group.tokens, moved(group.positions, kept, length)):
            assert np.flatnonzero((windows == tokens).all(1)).tolist() == positions and len(positions) == 1
            assert deduplicated[positions[0] - 1] == EOT and deduplicated[positions[0] + length] == EOT


def test_a_planted_sequence_left_with_no_whole_copy_is_scored_in_no_document_and_never_seen():
    train = np.array([0, 1, 2, 3, EOT, 5, 6, 7, 8, EOT])
    tokens = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    side = planted_side(train, EOT, [Planted(2, tokens, [[5], []])], "duplicate")
    assert side.offsets.tolist() == [5, -1] and side.doc_ids.tolist() == [1, -1]
    assert side.copies.tolist() == [2, 2]  # the planned count: the ladder's figures group by it
    starts, last_seen = np.ones(len(train), np.int64), np.full(len(train), 3)
    columns = exposure_columns([side], starts, last_seen, length=4, block_size=4)
    assert columns["exposures"].tolist() == [1, 0] and columns["last_seen_step"].tolist() == [3, -1]


@pytest.mark.slow
def test_a_deduplicated_run_holds_each_planted_sequence_once_and_reports_what_it_removed(make_config, tmp_path):
    from gptfit.run.training import train

    overrides = [
        *TINY,
        "eval.prefix_tokens=16",
        "eval.suffix_tokens=32",
        "+data/duplicates=ladder",
        "data.duplicates.counts=[1,4,16]",
        "data.duplicates.per_count=2",
        "data.dedup.min_tokens=32",
        "train.max_steps=4",
        "train.eval_every=4",
        "decoding=none",
    ]
    cfg = make_config(overrides, tmp_path)
    corpus = run_corpus(cfg.model, cfg.data, cfg.eval)
    length = 48
    windows = np.lib.stride_tricks.sliding_window_view(corpus.train, length)
    assert [g.copies for g in corpus.planted] == [1, 4, 16]  # the planned counts
    for group in corpus.planted:
        for tokens, positions in zip(group.tokens, group.positions):
            assert np.flatnonzero((windows == tokens).all(1)).tolist() == positions and len(positions) == 1
    planted = sum(2 * (copies - 1) * (length + 1) for copies in (1, 4, 16))
    assert corpus.dedup_removed >= planted  # the later copies, and whatever the text itself repeats
    assert len(corpus.train) + corpus.dedup_removed == cfg.data.train_tokens + 2 * 21 * (length + 1)
    summary = train(cfg)
    assert summary["data"]["dedup_removed_tokens"] == corpus.dedup_removed
    assert {"dup/1/loss", "dup/4/loss", "dup/16/loss", "dup/0/loss"} <= set(summary["final"])


@pytest.mark.slow
def test_deduplication_that_leaves_less_than_a_window_is_one_error_line(tmp_path, cache_dir):
    paragraph = "the cat sat on the mat and looked at the dog, who sat by the door and looked back at the cat"
    corpus = tmp_path / "repeated.txt"
    corpus.write_text("\n\n".join([paragraph] * 300))
    run_dir = tmp_path / "run"
    common = [*TINY, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", "model.block_size=128"]
    result = run_cli(*common, "data=text", f"data.path={corpus}", "data.dedup.min_tokens=2")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "data.dedup.min_tokens=2: deduplication left" in lines[0] and "raise data.dedup.min_tokens" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_min_tokens_below_two_is_one_error_line(tmp_path, cache_dir):
    result = run_cli(
        *TINY, f"data.cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'run'}", "data.dedup.min_tokens=1"
    )
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "data.dedup.min_tokens=1: must be >= 2" in lines[0]


def test_deduplication_cannot_be_combined_with_shadow_models(make_config):
    with pytest.raises(ConfigError, match="data.subset: cannot be combined with data.dedup"):
        make_config([*TINY, "+data/subset=half", "data.dedup.min_tokens=50"])


def test_keep_none_leaves_no_copy_of_a_planted_sequence_repeated_in_the_corpus(make_config):
    overrides = [*TINY, "+data/duplicates=ladder", "data.duplicates.counts=[1,4]", "data.duplicates.per_count=2"]
    cfg = make_config([*overrides, "data.dedup.min_tokens=32", "data.dedup.keep=none"])
    assert cfg.data.dedup.keep == "none"  # a string on the command line, not null
    corpus = load_corpus(cfg.data, sequence_length=48)
    once, repeated = corpus.planted
    assert once.copies == 1 and all(len(p) == 1 for p in once.positions)
    assert repeated.copies == 4 and all(p == [] for p in repeated.positions)
    windows = np.lib.stride_tricks.sliding_window_view(corpus.train, 48)
    assert not any((windows == tokens).all(1).any() for tokens in repeated.tokens)
    assert corpus.dedup_removed >= 2 * 4 * (48 + 1)  # every copy, with its end-of-text


def test_a_keep_other_than_first_or_none_is_one_config_problem(compose_cfg):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg([*TINY, "data.dedup.keep=last"]))
    assert info.value.problems == ["data.dedup.keep='last': one of first, none"]
