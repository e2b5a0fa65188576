"""Memorization per sequence: the exposure ledger against a brute-force count, epoch sampling, and the
per-sequence table (sequences.parquet) against the model it scores and the mem/ keys taken from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from gptfit.data.corpus import load_corpus
from gptfit.data.exposure import sequence_exposures, token_counts
from gptfit.data.windows import EpochWindows, RandomWindows
from gptfit.files import read_jsonl
from gptfit.metrics.scoring import score_sequences
from gptfit.metrics.sequences import both_sides, decoded_matches
from gptfit.model.loading import load_model
from gptfit.record import RunRecord
from tests.conftest import TINY


def brute_force_ledger(windows, steps: int, batch: int, n_tokens: int, block: int):
    """Every token position: how many of the first steps x batch windows held it, the last step that did."""
    counts, last = np.zeros(n_tokens, np.int64), np.full(n_tokens, -1, np.int64)
    for i in range(steps * batch):
        for t in range(windows.offset(i), windows.offset(i) + block):
            counts[t] += 1
            last[t] = i // batch + 1
    return counts, last


def test_the_ledger_equals_a_brute_force_count(tiny_run):
    run_dir, _ = tiny_run
    cfg = RunRecord.read(run_dir).config
    corpus = load_corpus(cfg.data)
    block, batch = cfg.model.block_size, cfg.train.batch_size
    windows = RandomWindows(corpus.train, block, cfg.train.max_steps * batch, cfg.seed)
    counts, last = brute_force_ledger(windows, cfg.train.max_steps, batch, len(corpus.train), block)
    with np.load(run_dir / "exposure.npz") as ledger:
        assert np.array_equal(ledger["counts"], counts)
        assert np.array_equal(ledger["last_seen"], last)
        assert ledger["starts"].sum() == cfg.train.max_steps * batch
        starts = ledger["starts"]
    # A sequence held whole: brute force over the windows, against the ledger's arithmetic.
    offsets, length = np.array([0, 16, 400, 1000 - 16]), 16
    whole = [
        sum(
            windows.offset(i) <= a and windows.offset(i) + block >= a + length
            for i in range(cfg.train.max_steps * batch)
        )
        for a in offsets
    ]
    got = sequence_exposures(starts, last, offsets, length, block)
    assert got["exposures"].tolist() == whole
    assert np.allclose(got["token_exposures"], [counts[a : a + length].mean() for a in offsets])
    assert np.array_equal(token_counts(starts, block), counts)


def test_epoch_sampling_shows_every_window_exactly_once_per_epoch():
    stream = np.arange(1000)
    windows = EpochWindows(stream, 48, 5 * 20 + 7, seed=3)
    assert windows.per_epoch == 20
    for epoch in range(5):
        offsets = sorted(windows.offset(i) for i in range(epoch * 20, (epoch + 1) * 20))
        assert offsets == list(range(0, 20 * 48, 48))  # each window once, none overlapping
    first, second = [windows.offset(i) for i in range(20)], [windows.offset(i) for i in range(20, 40)]
    assert first != second  # shuffled anew each epoch
    assert [EpochWindows(stream, 48, 40, seed=3).offset(i) for i in range(40)] == first + second  # seeded


@pytest.mark.slow
def test_an_epoch_run_counts_whole_windows_in_its_ledger(make_config, tmp_path):
    from gptfit.run.training import train

    steps, batch, block = 21, 8, 48  # 1024 tokens: 21 windows an epoch; 168 windows = 8 epochs
    train(make_config([*TINY, "train.sampling=epochs", f"train.max_steps={steps}", "decoding=none"], tmp_path))
    with np.load(tmp_path / "exposure.npz") as ledger:
        starts = ledger["starts"]
    assert set(np.flatnonzero(starts)) == set(range(0, 21 * block, block))
    assert (starts[::block][:21] == steps * batch // 21).all()


def test_the_table_holds_the_models_losses_and_the_mem_keys_are_its_means(tiny_run):
    run_dir, _ = tiny_run
    table = pd.read_parquet(run_dir / "sequences.parquet")
    final = read_jsonl(run_dir / "metrics.jsonl")[-1]
    last = table[table.step == final["step"]]
    assert set(last.split) == {"train", "val"} and (last.split == "train").sum() == (last.split == "val").sum()
    model = load_model(str(run_dir / "final"))
    tokens = torch.tensor(np.stack(last.tokens.to_numpy()))
    assert np.allclose(score_sequences(model, tokens, 64).mean().numpy(), last.loss, atol=1e-5)
    samples = last[last.kind == "sample"]
    for split in ("train", "val"):
        side = samples[samples.split == split]
        assert final[f"mem/exact_match_{split}"] == pytest.approx(side.exact_match.mean())
        assert final[f"mem/suffix_match_{split}"] == pytest.approx(side.suffix_match.mean())
        assert final[f"mem/extraction_rate_{split}"] == pytest.approx(side.extracted.mean())
    train = samples[samples.split == "train"]
    assert final["mem/greedy/extraction_rate"] == final["mem/extraction_rate_train"]
    assert final["mem/temp_high/extraction_rate"] == pytest.approx(train["extraction/temp_high"].mean())
    assert (train.exposures >= 0).all() and (train.token_exposures > 0).any()
    assert (samples[samples.split == "val"].last_seen_step == -1).all()  # held-out text is never trained on


def test_the_tables_greedy_columns_are_a_greedy_decode_of_every_sequence(tiny_corpus_run):
    # The table decodes only the rows that teacher forcing does not already show to be extracted; here
    # every row is decoded, on the memorizing model, where both kinds of row are common.
    table = pd.read_parquet(tiny_corpus_run / "sequences.parquet")
    last = table[table.step == table.step.max()]
    assert 10 < last.extracted.sum() < len(last) - 10
    model = load_model(str(tiny_corpus_run / "final"))
    tokens = torch.tensor(np.stack(last.tokens.to_numpy()))
    prefix = OmegaConf.load(tiny_corpus_run / "config.yaml").eval.prefix_tokens
    decoded = decoded_matches(model, tokens, prefix, dict(do_sample=False, num_beams=1), 64, seed=0)
    assert decoded.float().mean(1).tolist() == pytest.approx(last.suffix_match.tolist())
    assert decoded.all(1).tolist() == last.extracted.tolist()


def test_planted_sequences_occur_as_often_as_asked_and_the_baseline_never(make_config):
    cfg = make_config(
        [*TINY, "+data/duplicates=ladder", "data.duplicates.counts=[1,3,5]", "data.duplicates.per_count=2"]
    )
    corpus = load_corpus(cfg.data, sequence_length=16)
    windows = np.lib.stride_tricks.sliding_window_view(corpus.train, 16)  # [positions, 16]
    for group in corpus.planted:
        for tokens, positions in zip(group.tokens, group.positions):
            found = np.flatnonzero((windows == tokens).all(1))
            assert found.tolist() == sorted(positions) and len(found) == group.copies
    val = np.lib.stride_tricks.sliding_window_view(corpus.val, 16)
    for tokens in corpus.aside:  # held aside: in neither stream
        assert not (windows == tokens).all(1).any() and not (val == tokens).all(1).any()
    planted = sum(len(g.tokens) * 17 * g.copies for g in corpus.planted)
    assert len(corpus.train) == cfg.data.train_tokens + planted  # on top of the ordinary text


@pytest.mark.slow
def test_a_sequence_planted_often_is_memorized_and_one_planted_once_is_not(make_config, tmp_path):
    from gptfit.run.training import train

    overrides = [
        *TINY,
        "model.n_embd=64",
        "data.train_tokens=4096",
        "+data/duplicates=ladder",
        "data.duplicates.counts=[1,48]",
        "data.duplicates.per_count=4",
        "train.max_steps=400",
        "train.eval_every=200",
        "decoding=none",
    ]
    summary = train(make_config(overrides, tmp_path))
    final = summary["final"]
    assert final["dup/48/extraction_rate"] >= 0.75 and final["dup/1/extraction_rate"] <= 0.25
    assert final["dup/0/extraction_rate"] == 0.0
    assert final["dup/48/loss"] < final["dup/1/loss"] < final["dup/0/loss"]
    assert summary["data"]["planted_tokens"] == 4 * 17 * 49
    assert (tmp_path / "duplication.png").stat().st_size > 10_000
    table = pd.read_parquet(tmp_path / "sequences.parquet")
    planted = table[(table.step == 400) & (table.kind == "duplicate")]
    assert sorted(planted.copies.unique()) == [0, 1, 48]
    assert (planted[planted.copies == 48].exposures > planted[planted.copies == 1].exposures.max()).all()


@pytest.mark.slow
def test_a_forgotten_set_is_never_seen_after_its_last_step_and_is_forgotten(make_config, tmp_path):
    from gptfit.run.training import train

    until = 80
    overrides = [
        *TINY,
        "model.n_embd=64",
        "+data/forget=default",
        "data.forget.sequences=8",
        "data.forget.copies=16",
        f"data.forget.until_step={until}",
        "train.max_steps=200",
        "train.eval_every=40",
        "decoding=none",
    ]
    summary = train(make_config(overrides, tmp_path))
    rows = {r["step"]: r for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert summary["data"]["planted_tokens"] == 8 * 17 * 16
    table = pd.read_parquet(tmp_path / "sequences.parquet")
    forgotten = table[table.kind == "forget"]
    assert len(forgotten[forgotten.step == 200]) == 8 and (forgotten.copies == 16).all()
    assert (forgotten.last_seen_step <= until).all()  # the ledger shows no exposure after until_step
    assert rows[200]["forget/steps_since_seen"] >= 200 - until
    assert rows[40]["forget/steps_since_seen"] == 0
    # Memorized while seen, forgotten after: the loss rises and the suffix match falls.
    assert rows[200]["forget/loss"] > rows[until]["forget/loss"] + 0.5
    assert rows[200]["forget/suffix_match"] < rows[until]["forget/suffix_match"]
    assert (tmp_path / "forgetting.png").stat().st_size > 10_000


def test_the_held_out_side_can_outnumber_the_training_side():
    """eval.heldout_sequences: the held-out side is sized on its own (a TPR at 1% FPR needs 1,000 non-members),
    while null keeps the sides equal."""
    train, val = np.arange(10 * 16) % 50, np.arange(40 * 16) % 50
    for heldout, sizes in ((None, [10, 10]), (30, [10, 30]), (100, [10, 40])):  # 100: what the text holds
        sides = both_sides(train, val, eot_id=99, length=16, count=1024, heldout=heldout)
        assert [len(side.offsets) for side in sides] == sizes
