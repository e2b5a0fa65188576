"""What the per-sequence tables of a sweep's runs say: extraction against exposures (binned by token
exposures, across runs), the duplication and forgetting figures of the runs that have them, and every
membership-inference score's figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from gptfit.metrics.membership import SCORES
from gptfit.record import RunRecord
from gptfit.show.sweep import fmt, with_interval

# Bins of token exposures (how many training windows held each token of a sequence, on average).
EDGES = [0, 1, 2, 4, 8, 16, 32, 64, 128, np.inf]
LABELS = [f"{a:g}-{b:g}" if np.isfinite(b) else f">={a:g}" for a, b in zip(EDGES, EDGES[1:])]


def label(run: RunRecord) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in run.swept.items()) or f"job {run.job}"


def extraction_by_exposure(run: RunRecord) -> list[tuple[float, int] | None] | None:
    """Per bin of the last evaluation's ordinary training sequences: (extraction rate, sequences), or None."""
    last = run.last_table(columns=["split", "kind", "token_exposures", "extracted"])
    if last is None:
        return None
    rows = last.filter(pc.and_(pc.equal(last["split"], "train"), pc.equal(last["kind"], "sample")))
    exposures = np.asarray(rows["token_exposures"], dtype=np.float64)
    extracted = np.asarray(rows["extracted"], dtype=np.float64)
    which = np.digitize(exposures, EDGES[1:-1])  # bin index of each sequence
    return [
        (float(extracted[which == b].mean()), int((which == b).sum())) if (which == b).any() else None
        for b in range(len(LABELS))
    ]


def exposure_table(runs: list[RunRecord], sweep: Path) -> str | None:
    """Markdown: a row per finished run, a column per exposure bin: the extraction rate (and how many)."""
    measured = [(r, extraction_by_exposure(r)) for r in runs if r.status == "finished"]
    measured = [(r, bins) for r, bins in measured if bins is not None]
    if not measured:
        return None
    used = [b for b in range(len(LABELS)) if any(bins[b] for _, bins in measured)]
    lines = ["| run | " + " | ".join(LABELS[b] for b in used) + " |", "|---|" + "---|" * len(used)]
    for run, bins in measured:
        cells = [f"{bins[b][0]:.2f} ({bins[b][1]})" if bins[b] else "–" for b in used]
        lines.append(f"| {label(run)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def duplication_table(runs: list[RunRecord]) -> str | None:
    """Markdown: per run with the duplication ladder, the final extraction rate by number of copies."""
    with_ladder = [r for r in runs if any(k.startswith("dup/") for k in r.final)]
    if not with_ladder:
        return None
    counts = sorted({int(k.split("/")[1]) for r in with_ladder for k in r.final if k.startswith("dup/")})
    lines = ["| run | " + " | ".join(f"{c} copies" for c in counts) + " |", "|---|" + "---|" * len(counts)]
    for r in with_ladder:
        cells = [fmt(r.final.get(f"dup/{c}/extraction_rate")) for c in counts]
        lines.append(f"| {label(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def forgetting_table(runs: list[RunRecord]) -> str | None:
    """Markdown: per run with a forgotten set, its extraction and loss when last seen and at the end (not an
    unlearning run's: it never trains on its forget set, the unlearning section reads it)."""
    with_forget = [r for r in runs if "forget/loss" in r.final and not r.config.unlearn.on]
    if not with_forget:
        return None
    lines = [
        "| run | last seen at | extraction then | loss then | extraction at the end | loss at the end |",
        "|---|---|---|---|---|---|",
    ]
    for r in with_forget:
        seen = [x for x in r.rows if x.get("forget/steps_since_seen") == 0]
        then = seen[-1] if seen else {}
        lines.append(
            f"| {label(r)} | {then.get('step', '–')} | {fmt(then.get('forget/extraction_rate'))} | "
            f"{fmt(then.get('forget/loss'))} | {fmt(r.final.get('forget/extraction_rate'))} | "
            f"{fmt(r.final.get('forget/loss'))} |"
        )
    return "\n".join(lines)


def membership_table(runs: list[RunRecord], swept: list[str]) -> str | None:
    """Markdown: per run (named by the `swept` values) and membership score, the final AUC with its
    permutation p-value and the TPRs at 1% and 0.1% FPR, with intervals and what they resample."""
    scored = [r for r in runs if any(k.startswith("mia/") for k in r.final)]
    if not scored:
        return None
    lines = [
        "| run | score | AUC | p (AUC = 0.5) | TPR at 1% FPR | TPR at 0.1% FPR | intervals over |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in scored:
        for name in SCORES:
            if f"mia/{name}/auc" in r.final:
                cells = [
                    with_interval(r.final, f"mia/{name}/{figure}") for figure in ("auc", "tpr@1%fpr", "tpr@0.1%fpr")
                ]
                cells.insert(1, fmt(r.final.get(f"mia/{name}/auc_p")))
                run = ", ".join(f"{k}={fmt(r.swept.get(k))}" for k in swept) or f"job {r.job}"
                lines.append(f"| {run} | {name} | " + " | ".join(cells) + f" | {units_of(r)} |")
    return "\n".join(lines)


def units_of(run: RunRecord) -> str:
    """What a run's membership intervals resample, and how many of it each side holds: `documents 31 / 25`."""
    record = run.summary.get("mia_intervals")
    if not record:
        return "–"  # written before the unit was recorded: documents, whatever their count
    return f"{record['unit']}s {record['train_units']} / {record['val_units']}"
