"""Mitigations in whole runs: DP-SGD on gptfit's GPT, on a GPT-2 from scratch and in fine-tunings (full and
LoRA), with privacy/epsilon at every evaluation; early stopping's table of best/; bad DP values as one line."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from gptfit.files import METRICS, SEQUENCES_BEST, read_jsonl
from gptfit.run.privacy import PoissonBatches, plan
from tests.conftest import TINY, error_lines, run_cli
from tests.test_finetune_runs import finetune, hub_folders, tiny_base  # noqa: F401 (fixtures)

DP = ["train.dp.noise_multiplier=1.0", "train.max_steps=10"]


def check_privacy(run_dir, summary, config) -> None:
    """privacy/epsilon at every evaluation is the accountant's at that step; the ledger counts the Poisson batches."""
    privacy = plan(config.train.dp, len(np.load(run_dir / "exposure.npz")["starts"]) // 48, 8, 10)
    assert summary["privacy"]["noise_multiplier"] == 1.0 and summary["privacy"]["units"] == privacy.windows
    rows = read_jsonl(run_dir / METRICS)
    assert [r["step"] for r in rows] == [0, 5, 10]
    for row in rows:
        assert row["privacy/epsilon"] == pytest.approx(privacy.epsilon(row["step"]))
    assert 0 < summary["final"]["privacy/epsilon"] < float("inf")
    drawn = sum(len(b) for b in PoissonBatches(privacy.windows, privacy.sample_rate, 10, config.seed) if b[0] >= 0)
    assert np.load(run_dir / "exposure.npz")["starts"].sum() == drawn


@pytest.mark.slow
def test_dp_sgd_trains_gptfits_gpt_and_logs_epsilon(make_config, tmp_path):
    from gptfit.run.training import train

    config = make_config([*TINY, *DP], tmp_path)
    summary = train(config)
    assert summary["status"] == "finished"
    check_privacy(tmp_path, summary, config)


@pytest.mark.slow
def test_dp_sgd_trains_a_gpt2_from_scratch(make_config, hub_folders, tmp_path):  # noqa: F811
    from gptfit.run.training import train

    config = make_config([*TINY, *DP, "model=hf", f"model.name_or_path={hub_folders['gpt2']}"], tmp_path)
    summary = train(config)
    assert summary["status"] == "finished"
    check_privacy(tmp_path, summary, config)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_dp_sgd_fine_tunes_the_base(make_config, tiny_base, tmp_path, method):  # noqa: F811
    summary = finetune(make_config, tiny_base, tmp_path, *DP, "train.max_steps=6", f"train.finetune={method}")
    assert summary["status"] == "finished" and summary["final"]["privacy/epsilon"] > 0
    assert (summary["trainable_params"] < summary["total_params"]) == (method == "lora")


def test_early_stopping_scores_best_beside_final(tiny_run):
    run_dir, summary = tiny_run
    early = summary["early_stopping"]
    assert early["step"] == summary["best"]["val/loss"]["step"]
    table = pq.read_table(run_dir / SEQUENCES_BEST).to_pandas()
    assert set(table["step"]) == {early["step"]}
    train = table[(table["split"] == "train") & (table["kind"] == "sample")]
    assert early["mem/extraction_rate_train"] == pytest.approx(train["extracted"].mean())
    assert {"mia/loss/auc", "mia/loss/auc_lo", "mia/min_k_plus_plus/auc"} <= early.keys()


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.dp.noise_multiplier=-1"], "train.dp.noise_multiplier=-1.0: must be >= 0"),
        (["train.dp.noise_multiplier=1", "train.dp.target_epsilon=2"], "are both set"),
        (
            ["train.dp.target_epsilon=1e-6", "train.dp.delta=1e-5"],
            "train.dp.target_epsilon=1e-06: no noise multiplier reaches it",
        ),
        (["train.dp.noise_multiplier=1", "train.grad_accum=2"], "train.grad_accum=2: DP-SGD"),
        (["train.dp.noise_multiplier=1", "train.batch_size=64"], "train.batch_size=64: DP-SGD takes each"),
        (["train.dp.noise_multiplier=1", "train.dp.delta=0.5"], "train.dp.delta=0.5: must be below 1 / N"),
    ],
)
def test_a_bad_dp_value_is_one_line_with_status_2(tmp_path, cache_dir, overrides, message):
    result = run_cli(*TINY, *overrides, f"data.cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'run'}")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-1500:]


@pytest.mark.slow
def test_the_summary_says_what_dp_chose(tmp_path, make_config):
    config = make_config([*TINY, "train.dp.target_epsilon=50", "train.max_steps=10"], tmp_path)
    from gptfit.run.training import train

    summary = train(config)
    record = json.loads((tmp_path / "summary.json").read_text())["privacy"]
    assert record == summary["privacy"] and record["delta"] == pytest.approx(record["units"] ** -1.1)
    assert record["delta_rule"] == "1/N^1.1" and record["unit_tokens"] == 48 and "window" in record["unit"]
    assert summary["final"]["privacy/epsilon"] == pytest.approx(50, rel=0.02)
