"""How a run ends on the console: the summary a user reads instead of the Trainer's dictionary, checked on the
real tiny_corpus run against the files it wrote; a failed run's last line; a sweep's closing lines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from gptfit.files import read_jsonl
from tests.conftest import CONSOLE, TINY, run_cli


def summary_lines(stdout: str) -> dict[str, str]:
    """The closing lines by their label (the text before the first colon)."""
    tail = stdout[stdout.index("run folder:") :].splitlines()
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in tail if ":" in line}


def test_the_tiny_corpus_run_ends_on_its_summary(tiny_corpus_run):
    stdout = CONSOLE[tiny_corpus_run]
    assert "train_runtime" not in stdout  # the Trainer's dictionary is gone
    lines = summary_lines(stdout)
    folder = Path(lines["run folder"])
    assert folder.is_absolute() and folder == tiny_corpus_run.resolve() and folder.is_dir()
    page = Path(unquote(urlparse(lines["explorer page"]).path))
    assert lines["explorer page"].startswith("file://") and page == folder / "explore.html" and page.is_file()

    summary = json.loads((folder / "summary.json").read_text())
    rows = read_jsonl(folder / "metrics.jsonl")
    best = min(rows, key=lambda r: r["val/loss"])
    final = rows[-1]
    assert final == summary["final"]
    value, step, gap = _best(stdout)
    assert float(value) == pytest.approx(best["val/loss"], abs=5e-4) and int(step) == best["step"]
    assert float(gap) == pytest.approx(final["gap"], abs=5e-4)
    train, val = re.fullmatch(
        r"([\d.]+) of training sequences, ([\d.]+) of held-out ones", lines["extraction"]
    ).groups()
    assert float(train) == pytest.approx(final["mem/extraction_rate_train"], abs=5e-4)
    assert float(val) == pytest.approx(final["mem/extraction_rate_val"], abs=5e-4)
    score, auc = re.fullmatch(r"best score (\w+), AUC ([\d.]+)", lines["membership inference"]).groups()
    aucs = {k.split("/")[1]: v for k, v in final.items() if k.startswith("mia/") and k.endswith("/auc")}
    assert aucs[score] == max(aucs.values()) and float(auc) == pytest.approx(aucs[score], abs=5e-4)
    seconds, evaluations = re.fullmatch(r"(\d+) s \((\d+) evaluations\)", lines["wall time"]).groups()
    assert abs(int(seconds) - summary["wall_time_s"]) <= 1 and int(evaluations) == len(rows)
    assert lines["W&B (offline)"].startswith(str(folder / "wandb"))  # no key here: offline, synced later


def _best(stdout: str) -> tuple[str, str, str]:
    found = re.search(r"best val/loss ([\d.]+) at step (\d+); final gap ([-+\d.]+)", stdout)
    assert found, stdout[-800:]
    return found.groups()


def test_a_failed_run_ends_on_its_error_line_and_its_last_good_checkpoint(tiny_run, tmp_path):
    from gptfit.train import with_checkpoint

    line = with_checkpoint("out of memory with train.batch_size=4", tiny_run[0])
    kept = tiny_run[0] / "checkpoints" / "checkpoint-20"
    expected = f"(last good checkpoint: {kept}; continue with train.resume={tiny_run[0]})"
    assert line == f"out of memory with train.batch_size=4 {expected}"
    # A line that names its checkpoint already, or a folder without one, stays as it is.
    assert with_checkpoint("diverged; last good checkpoint: x", tiny_run[0]) == "diverged; last good checkpoint: x"
    assert with_checkpoint("no corpus", tmp_path) == "no corpus"


@pytest.mark.slow
def test_a_multirun_ends_on_its_sweep_folder_and_the_report_command(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *TINY,
        "train.max_steps=1",
        "decoding=none",
        "eval.explore=false",
        "seed=1,2",
        f"data.cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"sweep folder: {sweep.resolve()}" in result.stdout
    assert f"report: python -m gptfit.report {sweep.resolve()}" in result.stdout
