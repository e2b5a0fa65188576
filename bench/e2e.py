"""End to end: what a user waits for in `python -m gptfit.train +experiment=tiny_corpus logger=none`, against
the training loop alone.

- wall_s: the command as a subprocess, from its start to its exit;
- startup_s: from that start to the first optimizer step (imports, corpus, model, the step-0 evaluation);
- eval_s: its evaluation time (summary.json's eval_time_s, the explorer page included);
- train_loop_s: the same 800 optimizer steps through the same Trainer, windows and optimizer in this
  process, with evaluation and saving off, from the first step's start to the last step's end;
- wall_over_train_loop: wall_s / train_loop_s.
The two are measured one after the other, so run it alone on a quiet machine; with --repeat N, N rounds
of the two, and the figures are medians (the rounds listed beside them). Prints one JSON object.

    python bench/e2e.py [--threads N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["+experiment=tiny_corpus", "logger=none"]


def run_command(run_dir: Path, threads: int) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "gptfit.train", *COMMAND, f"train.threads={threads}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "startup_s": round(summary["first_step_at"] - started, 2),
        "eval_s": summary["eval_time_s"],
        "explore_s": summary.get("explore_time_s"),
    }


def train_loop(run_dir: Path, threads: int) -> float:
    """Seconds from the first step's start to the last step's end: the tiny_corpus loop with nothing else."""
    from hydra import compose, initialize_config_dir
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from gptfit.config import register, validate
    from gptfit.data.corpus import run_corpus
    from gptfit.run.exposure import ExposureLedger
    from gptfit.run.trainer import training_arguments
    from gptfit.run.training import build_trainer, prepare_model, quiet_libraries

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose("config", overrides=[*COMMAND, f"run_dir={run_dir}", f"train.threads={threads}"]))
    quiet_libraries(threads)
    corpus = run_corpus(cfg.model, cfg.data, cfg.eval)
    model = prepare_model(cfg.model, cfg.seed, corpus.tokenizer)
    ledger = ExposureLedger(len(corpus.train), cfg.model.block_size, cfg.train.batch_size)
    args = training_arguments(cfg.train, cfg.seed, run_dir, "cpu")
    args.save_strategy = "no"
    args.disable_tqdm = True
    times = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            times.setdefault("first", time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            times["last"] = time.perf_counter()

    trainer = build_trainer(cfg, corpus, model, ledger, args, [Clock()])
    trainer.remove_callback(PrinterCallback)  # stdout carries the JSON alone
    trainer.train()
    assert trainer.state.global_step == cfg.train.max_steps
    return times["last"] - times["first"]


def one_round(tmp: Path, threads: int) -> dict:
    command = run_command(tmp / "run", threads)
    loop = train_loop(tmp / "loop", threads)
    return {
        **command,
        "train_loop_s": round(loop, 2),
        "wall_over_train_loop": round(command["wall_s"] / loop, 3),
        "eval_share_of_wall": round(command["eval_s"] / command["wall_s"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (command, loop); the figures are medians")
    args = ap.parse_args()
    rounds = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(one_round(Path(tmp), args.threads))
    out = {key: statistics.median(r[key] for r in rounds) for key in rounds[0] if rounds[0][key] is not None}
    out["threads"] = args.threads
    if args.repeat > 1:
        out["rounds"] = rounds
    print(json.dumps(out))


if __name__ == "__main__":
    main()
