"""Runs that are killed, stopped, diverge, run out of memory, lose the network, or span several processes."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gptfit.files import read_jsonl
from gptfit.run.checkpoints import COMPLETE, find_checkpoint
from tests.conftest import LONG, ROOT, TINY, assert_same_rows, error_lines, launch, run_cli, wait_for


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_ends_with_the_same_metrics(
    uninterrupted, uninterrupted_run, tmp_path, cache_dir
):
    step = random.Random().choice(range(5, 40, 5))  # which checkpoint the kill follows
    print(f"killing after checkpoint-{step}")
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    proc = launch(args)
    wait_for(run_dir / "checkpoints" / f"checkpoint-{step}" / COMPLETE, proc)
    proc.kill()
    proc.wait()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"  # killed, not finished
    # The same command again: train.resume=auto finds the newest complete checkpoint in the run directory.
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["resumed_from_step"] >= step
    assert_same_rows(read_jsonl(run_dir / "metrics.jsonl"), uninterrupted)
    assert_same_ledger_and_table(run_dir, uninterrupted_run)


def assert_same_ledger_and_table(run_dir: Path, reference: Path) -> None:
    """The exposure ledger and the per-sequence table of a resumed run equal an uninterrupted run's."""
    with np.load(run_dir / "exposure.npz") as a, np.load(reference / "exposure.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("starts", "last_seen", "counts"))
    resumed, whole = pd.read_parquet(run_dir / "sequences.parquet"), pd.read_parquet(reference / "sequences.parquet")
    pd.testing.assert_frame_equal(resumed.drop(columns="tokens"), whole.drop(columns="tokens"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM], ids=["SIGUSR2", "SIGTERM"])
def test_a_stop_signal_saves_a_checkpoint_and_exits_75_and_the_rerun_continues(sig, uninterrupted, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    proc = launch(args)
    wait_for(run_dir / "checkpoints" / "checkpoint-10" / COMPLETE, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stop_signal"] == sig.name
    stopped = summary["stopped_at_step"]
    assert find_checkpoint(run_dir).name == f"checkpoint-{stopped}"  # saved at the step boundary
    assert f"stopped by {sig.name} at step {stopped}" in stderr and "Traceback" not in stderr
    if sig == signal.SIGUSR2:  # once is enough for the continuation
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((run_dir / "summary.json").read_text())["resumed_from_step"] == stopped
        assert_same_rows(read_jsonl(run_dir / "metrics.jsonl"), uninterrupted)


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        *TINY,
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        "train.lr=1e30",
        "train.warmup_steps=0",
        "train.grad_clip=0",
        "train.save_every=1",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "train/loss is not finite at step 2" in line and "lower train.lr" in line
    assert line.endswith("checkpoint-1")
    assert find_checkpoint(run_dir).name == "checkpoint-1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and not (run_dir / "final").exists()


@pytest.mark.slow
def test_out_of_memory_names_the_knobs_to_lower(tmp_path, cache_dir):
    def limit_memory():  # a real allocation failure: the process may map at most 6 GiB
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    run_dir = tmp_path / "run"
    args = [
        *TINY,
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        "model.n_embd=256",
        "model.n_head=4",
        "model.block_size=1024",
        "train.batch_size=512",
        "eval.batch_size=512",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "gptfit.train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert line.startswith("error: out of memory") and "lower train.batch_size" in line
    assert "Traceback" not in result.stderr


def test_a_checkpoint_that_would_run_code_is_refused_and_skipped(tmp_path, tiny_run):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    newest = find_checkpoint(run_dir)
    witness = tmp_path / "code-ran"

    class Payload:  # unpickling this would create the witness file
        def __reduce__(self):
            return (Path.touch, (witness,))

    torch.save({"state": Payload()}, newest / "rng_state.pth")
    with pytest.warns(UserWarning, match="skipping incomplete or corrupt checkpoint"):
        older = find_checkpoint(run_dir)
    assert older is not None and older != newest and not witness.exists()


def test_weights_are_saved_as_safetensors(tiny_run):
    run_dir = tiny_run[0]
    for folder in [*(run_dir / "checkpoints").glob("checkpoint-*"), run_dir / "final", run_dir / "best"]:
        assert (folder / "model.safetensors").exists(), folder
        # training_args.bin is the Trainer's record of its arguments; nothing loads it back.
        assert [p.name for p in folder.glob("*.bin")] in ([], ["training_args.bin"]), folder


class SilentServer:
    """A server that accepts connections and never answers: a network that hangs, the worst case."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


SECRET = "0123456789abcdef0123456789abcdef" + "gptfit00"  # 40 characters, like a W&B key


def files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.slow
def test_wandb_online_without_a_network_falls_back_to_offline_and_keeps_no_key(tmp_path, cache_dir):
    server = SilentServer()
    run_dir = tmp_path / "run"
    try:
        start = time.time()
        result = run_cli(
            *TINY,
            f"data.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}",
            "train.max_steps=5",
            "logger=wandb",
            "logger.mode=online",
            "logger.init_timeout=5",
            env={
                "WANDB_MODE": None,
                "WANDB_API_KEY": SECRET,
                "HF_TOKEN": "hf_" + SECRET,
                "WANDB_BASE_URL": f"http://127.0.0.1:{server.port}",
            },
        )
        took = time.time() - start
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "logging offline" in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["wandb_mode"] == "offline"
    assert list((run_dir / "wandb").glob("offline-run-*/*.wandb"))  # `wandb sync` uploads it later
    # The online attempt gives up after logger.init_timeout; the offline start after it takes a few seconds.
    assert summary["wandb_init_s"] < 5 + 20, summary["wandb_init_s"]
    print(f"W&B fallback: {summary['wandb_init_s']} s of {took:.0f} s")
    assert files_holding(run_dir, SECRET) == []


@pytest.mark.slow
def test_no_secret_is_written_into_an_offline_run(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        *TINY,
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        "train.max_steps=3",
        "logger=wandb",
        "logger.mode=offline",
        env={"WANDB_MODE": None, "WANDB_API_KEY": SECRET, "HF_TOKEN": "hf_" + SECRET},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((run_dir / "wandb").glob("offline-run-*/*.wandb"))  # W&B did write its files
    assert files_holding(run_dir, SECRET) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_run_like_one_process(tmp_path, cache_dir):
    args = [*TINY, f"data.cache_dir={cache_dir}", "logger=wandb", "logger.mode=offline"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "gptfit.train",
            *args,
            f"hydra.run.dir={runs}/" + "${now:%H-%M-%S.%f}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = list(runs.iterdir())  # rank 0 chose the directory, rank 1 followed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run, from rank 0
    single = tmp_path / "single"
    one = run_cli(*args, f"hydra.run.dir={single}", env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    # Same windows per step (rank r takes every r-th micro-batch); only the order of the gradient sum
    # differs, so the curves agree to float32 rounding.
    two, one = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(single / "metrics.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(two, one):
        for key in ("train/loss", "val/loss", "train/running_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (b["step"], key)
    # Each rank counted the windows it fetched; rank 0 summed them: the ledger of one process.
    with np.load(run_dir / "exposure.npz") as two_ledger, np.load(single / "exposure.npz") as one_ledger:
        assert np.array_equal(two_ledger["starts"], one_ledger["starts"])
        assert np.array_equal(two_ledger["last_seen"], one_ledger["last_seen"])


def submitit_tasks(folder: Path) -> list[int]:
    """Pids of the submitit task processes running jobs of this sweep (found through /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and any(str(folder).encode() in part for part in cmd):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the task process through /proc")
def test_a_preempted_submitit_job_is_requeued_and_resumes(uninterrupted, tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", *LONG, f"data.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "gptfit.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(sweep / "0" / "checkpoints" / "checkpoint-5" / COMPLETE, launcher)
    [task] = submitit_tasks(sweep)
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before preempting the job
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-2000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs and "stopped by SIGUSR2" in logs
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["resumed_from_step"] >= 5
    assert_same_rows(read_jsonl(sweep / "0" / "metrics.jsonl"), uninterrupted)
