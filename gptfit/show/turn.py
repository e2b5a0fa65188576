"""The turn on text (Morris et al. 2025): where memorizing gives way to generalizing. Runs on text scored against
a reference model (`eval.mia.reference`) carry `capacity/dataset_bits`, the training set's information as the
reference knows it; a model's capacity is bits per parameter x its parameters. Memorization should rise with
the dataset while it fits (ratio below 1) and fall once it no longer does, as the model starts to generalize.

Bits per parameter is the one fitted on data=uniform runs in the same report, else the paper's 3.6 (said in the
table). Every figure comes from the runs' summaries; `per_run` holds them one row per run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gptfit import keys
from gptfit.files import write_text_atomic
from gptfit.plots.capacity import turn_figure
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd

# What the table and figure show of each run's last evaluation: (column, key, label); `mem_bits_total` is
# derived below.
MEASURES = (
    ("val_loss", keys.VAL_LOSS, "held-out loss"),
    ("mem_bits", "mem/mem_bits_train", "memorized bits a training sequence"),
    ("mem_bits_total", None, "memorized bits, whole training set"),
    ("extraction", keys.EXTRACTION_TRAIN, "extraction of training sequences"),
    ("mia_auc", keys.MIA_AUC, "membership AUC (loss)"),
)


def record(run: RunRecord) -> dict | None:
    """A finished run on text with a reference's dataset bits; None for any other run."""
    summary, config = run.summary, run.config
    if not run.finished or config.data.source == "uniform":
        return None
    if summary.get("capacity/dataset_bits") is None:
        return None
    row = {
        "job": run.job,
        "model": f"{config.model.n_layer} x {config.model.n_embd}",
        "params": summary["capacity/params"],
        "train_tokens": summary["data"]["train_tokens"],
        "dataset_bits": summary["capacity/dataset_bits"],
        "seed": config.seed,
    }
    row.update({column: run.final.get(key) for column, key, _ in MEASURES if key is not None})
    # Morris et al.'s unintended memorization of the set: the table's mean over its sequences times the
    # sequences the training set holds (of eval.prefix_tokens + eval.suffix_tokens each).
    span = config.eval.prefix_tokens + config.eval.suffix_tokens
    mem_bits = row["mem_bits"]
    row["mem_bits_total"] = mem_bits * (row["train_tokens"] // span) if mem_bits is not None else None
    return row


def per_run(runs: list[RunRecord], bits_per_param: float) -> pd.DataFrame | None:
    records = [r for r in map(record, runs) if r is not None]
    if not records:
        return None
    frame = pd.DataFrame(records).sort_values(["params", "train_tokens", "seed"], kind="stable")
    frame["capacity_bits"] = bits_per_param * frame["params"]
    frame["ratio"] = frame["dataset_bits"] / frame["capacity_bits"]
    return frame


def turn_table(frame: pd.DataFrame, bits_per_param: float, source: str) -> str:
    """One row per model and training set, seeds pooled (mean ± sd)."""
    head = "| model | parameters | training tokens | dataset bits | dataset / capacity | runs | "
    head += " | ".join(label for _, _, label in MEASURES) + " |"
    lines = [
        f"Capacity = {bits_per_param:.2f} bits a parameter ({source}) x the parameters; dataset bits = the "
        "reference's negative log2-likelihood of the training set.",
        "",
        head,
        "|" + "---|" * (6 + len(MEASURES)),
    ]
    for _, group in frame.groupby(["params", "train_tokens"], sort=True):
        row = group.iloc[0]
        cells = [
            row["model"],
            f"{row['params']:,}",
            f"{row['train_tokens']:,}",
            f"{group['dataset_bits'].mean():,.0f}",
            f"{group['ratio'].mean():.2f}",
            str(len(group)),
        ]
        cells += [mean_sd(group[column].dropna().astype(float), 3) for column, _, _ in MEASURES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def turn_report(runs: list[RunRecord], out: Path, fitted: float | None, paper: float) -> tuple[str, list[Path]] | None:
    """The table (returned, and written to `out`/capacity_text.md), its per-run CSV and the figure; None
    without runs on text that carry dataset bits."""
    bits_per_param, source = (fitted, "fitted on data=uniform") if fitted is not None else (paper, "Morris et al.")
    frame = per_run(runs, bits_per_param)
    if frame is None:
        return None
    text = turn_table(frame, bits_per_param, source)
    write_text_atomic(out / "capacity_text.md", "# The turn on text\n\n" + text + "\n")
    write_text_atomic(out / "capacity_text.csv", frame.to_csv(index=False))
    figure = turn_figure(frame, MEASURES, out)
    return text, [out / "capacity_text.md", out / "capacity_text.csv", figure]
