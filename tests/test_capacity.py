"""data=uniform and memorized bits (Morris et al. 2025): an untrained model holds none of the random sequences,
a model far below its capacity holds all of them, and the tokenizer of symbols is a real one, saved with the run."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gptfit.data.corpus import load_corpus
from gptfit.measures import capacity
from gptfit.metrics import sequences
from gptfit.metrics.bits import memorized_bits, parameter_counts, uniform_bits
from gptfit.model.loading import build_model, load_pretrained, load_tokenizer
from tests.conftest import error_lines, run_cli

VOCAB, LENGTH, SEQUENCES = 8, 16, 8
FULL_BITS = SEQUENCES * (LENGTH - 1) * math.log2(VOCAB)  # 360: everything there is to know of the set
# 8 sequences of 16 tokens from 8 symbols for a 2 x 32 GPT (about 26k parameters, ~100x the set's 360 bits).
# A window of length + 1 with train.sampling=epochs is one whole sequence and its end-of-text.
SMALL_SET = [
    "data=uniform",
    f"data.uniform.vocab={VOCAB}",
    f"data.uniform.length={LENGTH}",
    f"data.uniform.sequences={SEQUENCES}",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    f"model.block_size={LENGTH + 1}",
    "eval.prefix_tokens=8",
    "eval.suffix_tokens=8",
    "logger=none",
]
# Trained until its bits saturate (train.saturation), as the capacity study trains: at a constant learning rate,
# with a cap far above the steps it needs.
CAP, WINDOW, MIN_STEPS = 2000, 0.5, 300
TRAINED = [
    *SMALL_SET,
    "train.sampling=epochs",
    f"train.max_steps={CAP}",
    "train.saturation.growth=0.01",
    # The study's window is 0.1 of thousands of steps; a run of a few hundred needs a longer one than 10%.
    f"train.saturation.window={WINDOW}",
    # Past the step where the rule first holds on this set (250), so that the stop shows it waits for it.
    f"train.saturation.min_steps={MIN_STEPS}",
    "train.batch_size=8",
    "train.lr=3e-3",
    "train.min_lr_ratio=1.0",
    "train.warmup_steps=10",
    "train.weight_decay=0",
    "train.eval_every=25",
    "train.save_every=100",
    "eval.train_windows=8",
    "eval.val_windows=8",
    "eval.heldout_prompts=2",
    "eval.prompt_tokens=4",
    "eval.copy_span=6",
    "decoding=greedy",
]


def table_of(model, corpus, count: int):
    """The per-sequence table of `count` sequences a side, scored as an evaluation scores it."""
    sides = sequences.uniform_sides(corpus.uniform, count)
    sequences.prepare_membership(sides, corpus.tokenizer, None, 16, 0)
    return sequences.score(model, sides, 8, {}, 16, 0, 0, 0.2)


class Kept(logging.Handler):
    """The messages logged while it is attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def trained(make_config, tmp_path_factory):
    """(run folder, its summary, the warnings it logged) of a tiny model trained on the small set."""
    from gptfit.run.training import train

    run_dir, kept = tmp_path_factory.mktemp("uniform_run"), Kept()
    logging.getLogger("gptfit").addHandler(kept)
    try:
        summary = train(make_config(TRAINED, run_dir))
    finally:
        logging.getLogger("gptfit").removeHandler(kept)
    return run_dir, summary, kept.messages


def test_an_untrained_model_has_memorized_nothing(make_config):
    cfg = make_config(SMALL_SET)
    corpus = load_corpus(cfg.data)
    torch.manual_seed(0)
    table = table_of(build_model(cfg.model, corpus.tokenizer), corpus, SEQUENCES)
    bits = np.asarray(table["mem_bits"], dtype=np.float64)
    assert len(bits) == 2 * SEQUENCES and (bits >= 0).all()
    assert bits.max() < 0.02 * (LENGTH - 1) * math.log2(VOCAB), bits  # near 0 on every sequence
    # The rows are the sequences themselves: each one's tokens, at its place in the stream.
    train = table.filter(table["split"].to_numpy(zero_copy_only=False) == "train")
    assert train["tokens"].to_pylist() == corpus.uniform.train.tolist()
    assert train["offset"].to_pylist() == [i * (LENGTH + 1) for i in range(SEQUENCES)]


@pytest.mark.slow
def test_a_model_far_below_capacity_holds_the_whole_set(trained):
    run_dir, summary, _ = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert rows[0]["capacity/bits_total"] < 0.02 * FULL_BITS  # step 0: nothing yet
    assert abs(last["capacity/bits_total"] - FULL_BITS) <= 0.05 * FULL_BITS, last["capacity/bits_total"]
    params = summary["capacity/params"]
    assert 0 < summary["capacity/params_non_embedding"] < params
    assert last["capacity/bits_per_param"] == pytest.approx(last["capacity/bits_total"] / params)
    table = pq.read_table(run_dir / "sequences.parquet")
    final = table.filter(table["step"].to_numpy() == last["step"])
    split = final["split"].to_numpy(zero_copy_only=False)
    bits = np.asarray(final["mem_bits"], dtype=np.float64)
    # The aggregate is the table's sum; the held-out sequences, never seen, hold nothing.
    assert bits[split == "train"].sum() == pytest.approx(last["capacity/bits_total"])
    assert bits[split == "val"].max() < 0.1 * (LENGTH - 1) * math.log2(VOCAB)
    # The loss windows are the sequences as training saw them: memorized, unlike the held-out ones.
    assert last["train/loss"] < 0.25 * math.log(VOCAB) < math.log(VOCAB) < last["val/loss"], last


def test_training_stops_where_the_bits_saturate(trained):
    run_dir, summary, _ = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stop = summary["saturated_at_step"]
    assert MIN_STEPS <= stop < CAP and rows[-1]["step"] == stop
    bits = {row["step"]: row["capacity/bits_total"] for row in rows}

    def most(until: float) -> float:
        return max(b for s, b in bits.items() if 0 < s <= until)

    assert most(stop) < 1.01 * most((1 - WINDOW) * stop)  # the rule held where it stopped ...
    for step in bits:  # ... and at no evaluation before
        if MIN_STEPS <= step < stop and any(0 < s <= (1 - WINDOW) * step for s in bits):
            assert most(step) >= 1.01 * most((1 - WINDOW) * step), (step, bits)
    # The stop is the run's last evaluation: its table is the final one, with the bootstrapped intervals.
    assert "mia/loss/auc_lo" in rows[-1] and (run_dir / "final").is_dir()


@pytest.mark.parametrize(
    "history, saturated",
    [
        ([(0, 0.0), (100, 50.0), (900, 99.0), (1000, 99.5)], True),  # 0.5% over the last 100 steps
        ([(0, 0.0), (100, 50.0), (900, 90.0), (1000, 99.0)], False),  # 10% growth
        ([(0, 0.0), (100, 0.0), (900, 0.0), (1000, 0.0)], False),  # nothing memorized is never saturated
        ([(0, 0.0), (50, 10.0), (100, 10.0)], True),  # the latest at or before 90: step 50
        ([(0, 5.0), (10, 5.0)], False),  # only step 0 lies in the window's past
        ([(0, 0.0), (100, 50.0), (950, 50.0), (1000, 80.0)], False),  # compared with 900 or before: 100
        ([(0, 0.0), (100, 50.0), (900, 99.0), (1000, 60.0)], True),  # a dip after the peak: the most held
        ([(0, 0.0), (100, 50.0), (800, 99.0), (900, 60.0), (1000, 70.0)], True),  # stays 99
    ],
)
def test_the_saturation_rule(history, saturated):
    assert capacity.saturated(history, window=0.1, growth=0.01) is saturated


def test_the_batched_forward_over_every_sequence_equals_the_tables_sum(trained, make_config):
    run_dir = trained[0]
    model, _ = load_pretrained(str(run_dir / "final"))
    corpus = load_corpus(make_config(SMALL_SET).data)
    whole = table_of(model, corpus, SEQUENCES)
    half = table_of(model, corpus, SEQUENCES // 2)  # too few rows: uniform_bits scores every sequence itself
    assert len(sequences.uniform_sides(corpus.uniform, SEQUENCES // 2)[0].offsets) < SEQUENCES
    assert uniform_bits(model, corpus.uniform, half, 16) == pytest.approx(
        uniform_bits(model, corpus.uniform, whole, 16)
    )
    total, non_embedding = parameter_counts(model)
    assert total == sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    assert total - non_embedding == (VOCAB + 1) * 32 + (LENGTH + 1) * 32  # tokens and positions


def test_the_tokenizer_round_trips_and_is_saved_with_the_run(trained, make_config):
    run_dir, _, warnings = trained
    corpus = load_corpus(make_config(SMALL_SET).data)
    for folder in ("tokenizer", "final"):  # the run's tokenizer, and the one saved beside the model
        tokenizer = load_tokenizer(str(run_dir / folder))
        assert len(tokenizer) == VOCAB + 1 and tokenizer.eos_token_id == VOCAB
        for ids in corpus.uniform.train.tolist():
            assert tokenizer.encode(tokenizer.decode(ids), add_special_tokens=False) == ids
    assert corpus.tokenizer.decode(corpus.train[: LENGTH + 1].tolist()).endswith("<|endoftext|>")
    # The default text prompt has no symbols to spell it: skipped, and said.
    assert any("My cute dog is a" in w and "cannot encode" in w for w in warnings), warnings


def test_memorized_bits_are_the_log2_gain_over_the_reference_never_below_zero():
    nats = np.array([0.0, 3 * math.log(2), 10 * math.log(2)])  # the model's summed loss: 0, 3 and 10 bits
    assert memorized_bits(nats, np.array([-5.0, -5.0, -5.0])).tolist() == pytest.approx([5.0, 2.0, 0.0])
    assert memorized_bits(nats, None) is None  # text without eval.mia.reference: not estimable


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.uniform.vocab=1", "data.uniform.vocab=1"),
        ("data.uniform.length=100", "data.uniform.length=100"),
        ("data.uniform.sequences=0", "data.uniform.sequences=0"),
        ("data.uniform.length=32", "eval.prefix_tokens + eval.suffix_tokens"),
        ("train.saturation.growth=-0.1", "train.saturation.growth=-0.1"),
        ("train.saturation.window=1", "train.saturation.window=1"),
        ("train.saturation.min_steps=-1", "train.saturation.min_steps=-1"),
    ],
)
def test_bad_values_are_one_error_line(override, key):
    result = run_cli("data=uniform", override, "logger=none")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {key}"), result.stderr


def test_saturation_needs_the_uniform_sequences():
    result = run_cli("train.saturation.growth=0.01", "logger=none")
    lines = error_lines(result.stderr)
    assert (
        result.returncode == 2
        and len(lines) == 1
        and lines[0].startswith("error: train.saturation: stops when data=uniform")
    ), result.stderr
