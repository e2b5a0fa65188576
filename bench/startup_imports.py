"""What a one-step run imports: `python -X importtime -m gptfit.train` of tiny_corpus at one step, in this
checkout and, with --baseline DIR, in another checkout of gptfit (an earlier commit), alternated round by
round so that both see the same machine. Prints one JSON object: per checkout, the median over rounds of
the import time summed over top-level imports (s), the part spent importing opacus (s) and the wall time of
the whole command (s).

    python bench/startup_imports.py [--baseline /path/to/other/checkout] [--repeat 3]
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
ONE_STEP = ["+experiment=tiny_corpus", "logger=none", "train.max_steps=1", "train.eval_every=1", "eval.explore=false"]


def one_run(checkout: Path, run_dir: Path) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPROFILEIMPORTTIME": "1"}
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "gptfit.train", *ONE_STEP, f"hydra.run.dir={run_dir}"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    top, opacus = 0, 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        depth = len(name) - len(name.lstrip()) - 1  # two spaces a level, after the one that follows the bar
        if depth == 0:  # a top-level import: its cumulative time holds its own imports
            top += int(cumulative)
        if name.strip() == "opacus":
            opacus += int(cumulative)
    return {"imports_s": top / 1e6, "opacus_s": opacus / 1e6, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="another checkout of gptfit to measure beside this one")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    checkouts = {"this": ROOT, **({"baseline": args.baseline} if args.baseline else {})}
    rounds: dict[str, list[dict]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for name, checkout in checkouts.items():
                rounds[name].append(one_run(checkout, Path(tmp) / f"{name}{i}"))
    out = {
        name: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        for name, runs in rounds.items()
    }
    if args.baseline:
        out["imports_ratio"] = round(out["this"]["imports_s"] / out["baseline"]["imports_s"], 3)
    out["repeat"] = args.repeat
    print(json.dumps(out))


if __name__ == "__main__":
    main()
