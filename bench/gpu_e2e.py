"""`python -m gptfit.train +experiment=tiny_corpus logger=none` end to end on a device, as one JSON document.

Runs the command as a user would (a subprocess, train.device set, the run folder and the corpus cache in a
temporary folder), then reads its summary.json: the wall time of the command, the time to the first step
(imports, corpus, tokenizer, model, the step-0 evaluation), the evaluation time, and the run's figures:
its final row (losses, gap, memorization, membership inference) and the best value of each loss.

    python bench/gpu_e2e.py [--device cuda] [--toy] [--budget-s 120] [-- extra overrides]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import ROOT, common_args, emit, log

# The toy run: the same experiment, 40 steps, evaluated at 0, 20 and 40.
TOY = ["train.max_steps=40", "train.eval_every=20", "train.save_every=40", "train.warmup_steps=5"]
HEADLINE = (
    "train/loss",
    "val/loss",
    "gap",
    "val/ppl",
    "mem/extraction_rate_train",
    "mem/extraction_rate_val",
    "mem/exact_match_train",
    "mem/mia_auc",
)


def run(device: str, overrides: list[str], tmp: Path, timeout: float) -> tuple[dict, float]:
    """(the command's result, its wall seconds); stderr streams through to ours."""
    command = [sys.executable, "-m", "gptfit.train", "+experiment=tiny_corpus", "logger=none"]
    command += [f"train.device={device}", f"hydra.run.dir={tmp / 'run'}", f"data.cache_dir={tmp / 'cache'}"]
    command += overrides
    log("tiny_corpus: python", " ".join(command[1:]))
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        rc = done.returncode
        log(done.stdout[-4000:])
    except subprocess.TimeoutExpired:
        rc = "timeout"
    out = {"command": "python " + " ".join(command[1:]), "returncode": rc, "wall_s": round(time.time() - started, 2)}
    return out, started


def figures(summary: dict, started: float) -> dict:
    final = summary.get("final") or {}
    first_step = summary.get("first_step_at")
    return {
        "status": summary.get("status"),
        "error": summary.get("error"),
        "device": summary.get("device"),
        "steps": final.get("step"),
        "tokens_seen": final.get("tokens_seen"),
        "run_wall_time_s": summary.get("wall_time_s"),
        "startup_s": round(first_step - started, 2) if first_step else None,
        "eval_s": summary.get("eval_time_s"),
        "headline": {k: final[k] for k in HEADLINE if k in final},
        "best": summary.get("best"),
        "final": final,
    }


def main() -> None:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides")
    args = ap.parse_args()
    overrides = (TOY if args.toy else []) + args.overrides
    with tempfile.TemporaryDirectory() as tmp:
        result, started = run(args.device, overrides, Path(tmp), args.budget_s)
        summary_path = Path(tmp) / "run" / "summary.json"
        if summary_path.exists():
            result |= figures(json.loads(summary_path.read_text()), started)
            if result.get("run_wall_time_s") is not None and result.get("startup_s") is not None:
                result["train_and_eval_after_first_step_s"] = round(result["wall_s"] - result["startup_s"], 2)
    log(f"tiny_corpus: {result.get('status')} in {result['wall_s']} s; {result.get('headline')}")
    emit(result)


if __name__ == "__main__":
    main()
