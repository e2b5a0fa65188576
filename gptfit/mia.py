"""`python -m gptfit.mia <sweep dir> [--wandb]`: membership inference with shadow models.

For a sweep of runs trained on random halves of the same candidates (`+experiment=shadow_models`): LiRA
and RMIA, online and offline, against the single-model scores on the same targets, at low false-positive
rates; and the counterfactual memorization of every candidate (gptfit/show/shadow.py). Writes `mia_report.md`
with its figures into the sweep directory; `--wandb` logs them as a W&B run in the sweep's group.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptfit.cli import fail
from gptfit.errors import UserError
from gptfit.run.wandb_run import start_sweep_wandb
from gptfit.show.shadow import ATTACKS, shadow_report
from gptfit.show.sweep import fmt, read_sweep


def log_to_wandb(sweep: Path, pool: dict) -> None:
    runs = read_sweep(sweep)
    run = start_sweep_wandb([r.config.logger for r in runs if r.has_config], sweep, "mia", {"runs": len(runs)})
    if run is None:
        print("--wandb: logger.mode=disabled in the sweep's runs; nothing logged")
        return
    import wandb

    figures = ["auc", "tpr@1%fpr", "tpr@0.1%fpr"]
    table = wandb.Table(columns=["attack", *figures, *(f"{f}_lo" for f in figures), *(f"{f}_hi" for f in figures)])
    for name in ATTACKS:
        table.add_data(
            name,
            *(pool[name].get(f) for f in figures),
            *(pool[name].get(f"{f}_lo") for f in figures),
            *(pool[name].get(f"{f}_hi") for f in figures),
        )
    run.log(
        {
            "mia/pooled": table,
            "mia/roc": wandb.Image(str(sweep / "mia_lira_roc.png")),
            "mia/counterfactual": wandb.Image(str(sweep / "mia_counterfactual.png")),
        }
    )
    run.finish()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gptfit.mia", description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="a multirun directory of shadow models, e.g. outputs/multiruns/<stamp>")
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples of documents behind the intervals")
    ap.add_argument("--wandb", action="store_true", help="also log the report as a W&B run (job_type=mia)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.bootstrap < 0:
            raise UserError(f"--bootstrap={args.bootstrap}: must be >= 0")
        out, pool = shadow_report(Path(args.sweep), args.bootstrap)
    except UserError as e:
        fail([str(e)])
    for name in ATTACKS:
        print(f"{name:>16}: AUC {fmt(pool[name]['auc'])}, TPR at 1% FPR {fmt(pool[name]['tpr@1%fpr'])}")
    if args.wandb:
        log_to_wandb(Path(args.sweep), pool)
    print(f"report: {out}")


if __name__ == "__main__":
    main()
