"""`python -m gptfit.report <sweep dir> [<sweep dir> ...] [--wandb]`: one table and a few figures for a whole sweep.

Reads every job directory of a Hydra multirun (`<sweep>/<job number>/`): its overrides
(`.hydra/overrides.yaml`), `summary.json` and `metrics.jsonl`. Several sweeps (a study run as a few multiruns,
e.g. extra seeds in a second one) are reported together: into their closest common folder, each job named by
its path from there (`a/0`). Writes into the sweep directory:
- `report.md`: one row per run (swept values, final losses, gap, memorization, copy rate per decoding
  setting), then the mean and spread over seeds of each setting, and Spearman rank correlations of the
  main figures with corpus size; failed and unfinished runs are listed as such;
- `report_gap.png`: gap, extraction rate and membership AUC against corpus size (log axis);
- `report_val_loss.png`: the validation loss curve of every run that logged one;
- `report_copy_rate.png`: copy rate against corpus size, one line per decoding setting (where runs generate);
- `report_decoding.png`: copy rate and novel 8-grams of each decoding setting, a bar per swept value;
- on fine-tunings (runs that score a general corpus, `eval.general`): a table of what each method learns,
  forgets and memorizes at each corpus size, and `learn_forget.png`, the learn-forget plane;
- `explore.html`: the explorer page of the sweep: every run's curves (each linking to the run's own page)
  and the gap, extraction and AUC against corpus size;
- the membership-inference figures of every score (AUC, TPR at 1% and 0.1% FPR, with intervals);
- on the grammar (runs with `grammar/...` metrics): a table of the copied / novel-valid / invalid shares
  of each decoding setting's sentences and of the model's and the grammar's held-out NLL, and
  `report_grammar.png`: the novel-valid share against corpus size, one line per decoding setting,
  beside the two NLLs;
- on mitigation studies (runs of +experiment=mitigations or mitigations_finetune): the mitigation table, a row
  per arm (named from the runs' configs, seeds pooled, an `early stopping` row beside each unmitigated arm) of
  what it costs (held-out loss, bits per byte, general corpus loss, wall time) and what it leaves memorized
  (extraction of ordinary and planted text, the fewest copies extracted half the time, canary exposure, the
  loss and min-k++ membership scores, DP epsilon), also as `mitigations.md` with the per-run figures in
  `mitigations.csv`, and `mitigations.png`: held-out loss against membership AUC and planted extraction.
- on data=uniform runs (+experiment=capacity): the capacity table, a row per model and dataset size (the bits
  memorized, the share of the set, bits per parameter, steps to saturation), each model's plateau, and bits per
  parameter fitted over the plateaus with its interval, also as `capacity.md` and `capacity.csv`, and
  `capacity.png`: memorized bits against dataset bits, and the plateaus against parameters;
- on runs on text scored against a reference (+experiment=capacity_text): the turn, a row per model and
  training set of its dataset bits over capacity (bits per parameter fitted on data=uniform runs reported
  alongside, else the paper's 3.6) with held-out loss, memorized bits, extraction and membership AUC, also as
  `capacity_text.md` and `capacity_text.csv`, and `capacity_text.png`: each against the ratio, 1 marked.
`--wandb` logs the same table and figures as a W&B run with job_type=report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptfit.cli import fail
from gptfit.errors import UserError
from gptfit.keys import EXTRACTION_TRAIN, GAP, MIA_AUC
from gptfit.page.write import sweep_page
from gptfit.record import RunRecord
from gptfit.run.wandb_run import start_sweep_wandb
from gptfit.show.sections import SECTIONS, Sweep
from gptfit.show.sweep import COLUMNS, fmt, read_sweeps, table, trends, varying
from gptfit.show.sweep_figures import sweep_figures


def report(sweeps: Path | list[Path], to_wandb: bool = False) -> Path:
    given = [sweeps] if isinstance(sweeps, Path) else sweeps
    folder, runs = read_sweeps(given)
    swept, fixed = varying(runs)
    body, corr = table(runs, swept), trends(runs)
    lines = [f"# Sweep report: {', '.join(str(s) for s in given)}", ""]
    if fixed:
        lines += ["Overrides shared by every run: " + " ".join(f"`{k}={fmt(v)}`" for k, v in fixed.items()), ""]
    lines += [body, ""]
    sweep = Sweep(runs, folder, swept)
    sections = [found for section in SECTIONS if (found := section(sweep)) is not None]
    for found in sections:
        lines += [f"## {found.heading}", "", found.body, ""]
    lines += ["## Trends with corpus size (Spearman rank correlation)", ""]
    lines += [f"- {label}: {fmt(value)}" for label, value in corr.items()]
    not_done = [r for r in runs if r.status != "finished"]
    if not_done:
        lines += ["", "## Runs that did not finish", ""]
        lines += [f"- job {r.job}: {r.status}" + (f" ({r.error})" if r.error else "") for r in not_done]
    paths = sweep_figures(runs, folder) + [path for found in sections for path in found.figures]
    page = sweep_page(folder, runs, ladder_series(runs))
    lines += ["", f"Explore every run's curves in [{page.name}]({page.name}).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in paths]
    out = folder / "report.md"
    out.write_text("\n".join(lines) + "\n")
    print(body)
    for found in sections:
        if found.printed:
            print(found.body)
    for label, value in corr.items():
        print(f"spearman({label}, corpus size) = {fmt(value)}")
    for r in not_done:
        print(f"job {r.job}: {r.status}")
    print(f"report: {out}")
    if to_wandb:
        log_to_wandb(folder, runs, paths)
    return out


def ladder_series(runs: list[RunRecord]) -> list[dict]:
    """The explorer's ladder figures: gap, extraction and AUC against corpus size, when the size varies."""
    done = sorted((r for r in runs if r.status == "finished" and r.train_tokens), key=lambda r: r.train_tokens)
    if len({r.train_tokens for r in done}) < 2:
        return []
    keys = [(GAP, GAP), (EXTRACTION_TRAIN, "extraction"), (MIA_AUC, "membership AUC")]
    return [
        {
            "title": "against training tokens",
            "series": [
                [
                    label,
                    [r.train_tokens for r in done if key in r.final],
                    [r.final[key] for r in done if key in r.final],
                ]
                for key, label in keys
            ],
        }
    ]


def log_to_wandb(sweep: Path, runs: list[RunRecord], paths: list[Path]) -> None:
    run = start_sweep_wandb([r.config.logger for r in runs if r.has_config], sweep, "report", {"runs": len(runs)})
    if run is None:
        print("--wandb: logger.mode=disabled in the sweep's runs; nothing logged")
        return
    import wandb

    columns = ["job", "status", "train_tokens", *[k for k, _ in COLUMNS]]
    t = wandb.Table(columns=columns)
    for r in runs:
        t.add_data(r.job, r.status, r.train_tokens, *[r.final.get(k) for k, _ in COLUMNS])
    run.log({"sweep": t, **{p.stem: wandb.Image(str(p)) for p in paths}})
    run.finish()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gptfit.report", description=__doc__.splitlines()[0])
    ap.add_argument(
        "sweep", nargs="+", help="a multirun directory, e.g. outputs/multiruns/<stamp>; several are reported together"
    )
    ap.add_argument("--wandb", action="store_true", help="also log the report as a W&B run (job_type=report)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report([Path(s) for s in args.sweep], args.wandb)
    except UserError as e:
        fail([str(e)])


if __name__ == "__main__":
    main()
