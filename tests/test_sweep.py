"""Sweeps through the real Hydra multirun command, and the report of a whole sweep."""

from __future__ import annotations

import json
import shutil

import pytest

from gptfit.report import report
from gptfit.show.sweep import read_sweep, spearman
from tests.conftest import TINY, run_cli
from tests.wandb_log import find_run


@pytest.fixture(scope="module")
def mini_ladder(tmp_path_factory, cache_dir):
    """A 3-size ladder of the corpus_ladder experiment, shrunk, run as a user would."""
    sweep = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "-m",
        "+experiment=corpus_ladder",
        *TINY,
        f"data.cache_dir={cache_dir}",
        "data.train_tokens=512,1024,2048",
        "seed=1",
        "train.max_steps=10",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return sweep


@pytest.mark.slow
def test_every_job_of_the_ladder_has_its_own_directory(mini_ladder):
    jobs = sorted(d.name for d in mini_ladder.iterdir() if d.is_dir())
    assert jobs == ["0", "1", "2"]
    sizes = [json.loads((mini_ladder / j / "summary.json").read_text())["config"]["data"]["train_tokens"] for j in jobs]
    assert sizes == [512, 1024, 2048]
    # Each job of a sweep gets a W&B group of its condition (three sizes: three groups), named by its overrides.
    configs = [json.loads((mini_ladder / j / "summary.json").read_text())["config"]["logger"] for j in jobs]
    assert len({c["group"] for c in configs}) == 3
    assert all(c["group"].startswith(f"corpus_ladder-{mini_ladder.name}/") for c in configs)
    assert all(c["sweep"] == mini_ladder.name and f"sweep:{mini_ladder.name}" in c["tags"] for c in configs)
    assert "data.train_tokens=512" in configs[0]["run_name"] and "data.train_tokens=512" in configs[0]["group"]


def test_the_report_has_a_row_per_run_and_its_figures(mini_ladder):
    out = report(mini_ladder)
    text = out.read_text()
    main_table = text.split("\n## ")[0]
    rows = [line for line in main_table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == 3 and all("finished" in r for r in rows)
    for name in ("report_gap.png", "report_val_loss.png", "report_copy_rate.png", "report_decoding.png"):
        assert (mini_ladder / name).stat().st_size > 5000
    assert "Spearman" in text
    # The sweep's explorer page: every run's curves, linking to each run's own page.
    page = (mini_ladder / "explore.html").read_text()
    assert all(f'"link":"{job}/explore.html"' in page for job in ("0", "1", "2"))
    # The decoding table: one row per corpus size and decoding setting.
    decoding = text.split("## Decoding settings")[1].split("##")[0]
    assert len([line for line in decoding.splitlines() if line.startswith("| 512 |")]) == 7


@pytest.mark.slow
def test_the_report_is_logged_as_a_wandb_report_run(mini_ladder, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(mini_ladder, sweep)
    result = run_cli(str(sweep), "--wandb", module="gptfit.report", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    logged = find_run(sweep / "wandb")
    assert logged.run.job_type == "report" and logged.run.run_group == f"report-{mini_ladder.name}"
    assert logged.tags == [f"sweep:{mini_ladder.name}"] and logged.run.project == "gptfit"
    files = {p.name for p in (runs[0] / "files").rglob("*")}
    assert any(name.startswith("report_gap") for name in files), files
    assert any(name.startswith("sweep") and name.endswith(".table.json") for name in files), files


def test_the_report_lists_failed_and_unfinished_runs(mini_ladder, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(mini_ladder, sweep)
    summary_file = sweep / "1" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary.update(status="failed", error="RuntimeError: boom")
    summary_file.write_text(json.dumps(summary))
    (sweep / "2" / "summary.json").unlink()
    statuses = {r.job: r.status for r in read_sweep(sweep)}
    assert statuses == {"0": "finished", "1": "failed", "2": "not started"}
    text = report(sweep).read_text()
    assert "job 1: failed (RuntimeError: boom)" in text and "job 2: not started" in text


@pytest.mark.slow
def test_report_of_a_missing_sweep_is_one_line():
    result = run_cli("/no/such/sweep", module="gptfit.report")
    assert result.returncode == 2 and result.stderr.strip() == "error: /no/such/sweep: no such sweep directory"


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_a_job(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        *TINY,
        f"data.cache_dir={cache_dir}",
        "train.max_steps=3",
        "decoding=greedy",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "finished"


def test_the_report_reads_the_per_sequence_tables(mini_ladder):
    text = report(mini_ladder).read_text()
    section = text.split("## Extraction against exposures")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| data.train_tokens=")]
    assert len(rows) == 3  # one per run, binned by token exposures
    assert (mini_ladder / "report_exposure.png").stat().st_size > 5000
    # Every run's membership scores, each with its final interval.
    membership = text.split("## Membership inference by score")[1].split("\n## ")[0]
    rows = [line for line in membership.splitlines() if line.startswith("| data.train_tokens=")]
    # loss, zlib, min_k, min_k_plus_plus, dc_pdd, recall (the 48-token context leaves 32 tokens beside the
    # table's 16); blind too where the training text holds two documents or more
    assert all(sum(row.startswith(f"| data.train_tokens={n} | ") for row in rows) in (6, 7) for n in (512, 1024, 2048))
    assert all(" [" in row.split("|")[3] for row in rows)  # the AUC with its interval
