"""One writer per run folder, and the faults that strike while a run writes: a second process into a busy
folder, a disk that fills up during a checkpoint, a kill between a checkpoint's files, a torn metrics line.
After each, the next run resumes, and every evaluated step appears exactly once in metrics.jsonl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gptfit.files import read_jsonl
from gptfit.run.checkpoints import COMPLETE, find_checkpoint, unreadable
from gptfit.run.folder import LOCK_NAME, discard_unused_run_dir
from tests.conftest import LONG, ROOT, assert_same_rows, error_lines, launch, run_cli, wait_for
from tests.test_reliability import assert_same_ledger_and_table

# `python -m gptfit.train` with a fault injected into the running process: FAULT is run first, then the
# command itself, with the arguments given.
TRAIN_WITH = """
import sys
{fault}
from gptfit.cli import hydra_main
from gptfit.train import main
sys.argv = ["gptfit.train", *sys.argv[1:]]
hydra_main(main)()
"""

# The process kills itself between a checkpoint's files: its weights are on disk, its optimizer state not.
KILL_BETWEEN_FILES = """
import os, signal
from transformers import Trainer
save = Trainer._save_optimizer_and_scheduler
def kill_midway(self, output_dir):
    if self.state.global_step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, output_dir)
Trainer._save_optimizer_and_scheduler = kill_midway
"""

# After the first complete checkpoint, no file may grow past 40 kB (RLIMIT_FSIZE, the way a full disk shows
# to a writer); SIGXFSZ is ignored so that the write fails with an error instead of killing the process.
FILL_DISK_AFTER_FIRST_CHECKPOINT = """
import resource, signal
from gptfit.run.callback import RunCallback
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
on_save = RunCallback.on_save
def full_after(self, args, state, control, **kwargs):
    on_save(self, args, state, control, **kwargs)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))
RunCallback.on_save = full_after
"""


def train_with(fault: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-c", TRAIN_WITH.format(fault=fault), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def files_of(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()
    }


def steps_once(run_dir: Path) -> list[int]:
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert len(steps) == len(set(steps)), steps  # every evaluated step exactly once
    return steps


@pytest.mark.slow
def test_a_second_process_into_a_busy_run_folder_stops_at_once_and_touches_nothing(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    first = launch(args)
    wait_for(run_dir / "checkpoints" / "checkpoint-5" / COMPLETE, first)
    record = files_of(run_dir / ".hydra")
    started = time.time()
    second = run_cli(*args)
    took = time.time() - started
    assert second.returncode == 2 and took < 10, (took, second.stderr[-1000:])
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run folder ") and f"(pid {first.pid})" in lines[0], lines
    assert files_of(run_dir / ".hydra") == record  # Hydra's record of the first run, untouched
    assert first.poll() is None  # the refusal came while the first run was still writing
    discard_unused_run_dir(str(run_dir))  # never removes a folder whose lock another process holds
    assert run_dir.is_dir()
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert steps_once(run_dir) == list(range(0, 41, 5))  # one row per evaluated step


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_never_blocks(uninterrupted, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    proc = launch(args)
    wait_for(run_dir / "checkpoints" / "checkpoint-15" / COMPLETE, proc)
    proc.kill()
    proc.wait()
    assert (run_dir / LOCK_NAME).read_text().strip() == str(proc.pid)  # the file stays; its lock died with it
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_rows(read_jsonl(run_dir / "metrics.jsonl"), uninterrupted)


@pytest.mark.slow
def test_kill_between_the_files_of_a_checkpoint_resumes_from_the_previous_one(
    uninterrupted, uninterrupted_run, tmp_path, cache_dir
):
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    killed = train_with(KILL_BETWEEN_FILES.format(step=20), args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    half = run_dir / "checkpoints" / "checkpoint-20"
    assert (half / "model.safetensors").exists() and unreadable(half) is not None  # weights written, nothing more
    assert find_checkpoint(run_dir).name == "checkpoint-15"
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from_step"] == 15
    assert_same_rows(read_jsonl(run_dir / "metrics.jsonl"), uninterrupted)
    assert_same_ledger_and_table(run_dir, uninterrupted_run)  # the ledger continues from checkpoint-15 exactly


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_checkpoint_is_one_line_and_the_rerun_resumes(uninterrupted, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    full = train_with(FILL_DISK_AFTER_FIRST_CHECKPOINT, args)
    assert full.returncode == 2, full.stderr[-2000:]
    lines = error_lines(full.stderr)
    assert len(lines) == 1 and "the disk is full" in lines[0] and "checkpoint-5" in lines[0], full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert (
        find_checkpoint(run_dir).name == "checkpoint-5" and unreadable(run_dir / "checkpoints" / "checkpoint-5") is None
    )
    result = run_cli(*args)  # space again: the same command resumes from the last complete checkpoint
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from_step"] == 5
    assert_same_rows(read_jsonl(run_dir / "metrics.jsonl"), uninterrupted)


@pytest.mark.slow
def test_a_torn_last_metrics_line_is_dropped_with_one_line_and_never_duplicates_a_row(
    uninterrupted, tmp_path, cache_dir
):
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    proc = launch(args)
    wait_for(run_dir / "checkpoints" / "checkpoint-25" / COMPLETE, proc)
    proc.kill()
    proc.wait()
    with open(run_dir / "metrics.jsonl", "a") as f:  # what a kill in the middle of an append leaves
        f.write('{"step": 30, "tokens_seen": 1440, "train/lo')
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in (result.stdout + result.stderr).splitlines() if "torn line" in line]
    assert len(said) == 1 and "metrics.jsonl: dropped 1 torn line" in said[0], result.stderr[-2000:]
    assert steps_once(run_dir) == list(range(0, 41, 5))
    assert_same_rows(read_jsonl(run_dir / "metrics.jsonl"), uninterrupted)
