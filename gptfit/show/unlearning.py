"""Unlearning's table and figure in `gptfit.report`: every unlearning run (unlearn.method set in its config),
one row per method and strength over seeds, beside the model it started from and the model retrained without
the forget set (summary.json's `retrained`, measures/unlearning.py).

A row reads each run at two points fixed before looking: its last evaluation, and its first evaluation whose
forget-set extraction is at most 0.05 (the rule of the study's acceptance, the same for every method). The
held-out loss rise is against the run's own step 0, the starting model's.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from gptfit.files import write_text_atomic
from gptfit.keys import VAL_LOSS
from gptfit.plots.unlearning import forget_retain_plane
from gptfit.record import RunRecord
from gptfit.show.numbers import NONE, mean_sd, numbers

EXTRACTION = "forget/extraction_rate"
GONE = 0.05  # forget-set extraction counted as removed
MIA = "forget/mia/loss/auc"


def arm(run: RunRecord) -> str:
    """A run's method, with the knob it reads (gradient_difference's forget weight, localize's cut)."""
    u = run.config.unlearn
    if u.method == "gradient_difference":
        return f"gradient_difference (forget weight {u.strength:g})"
    if u.method == "localize":
        return f"localize ({u.strength:g}% of units)"
    return u.method


def first_gone(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r.get(EXTRACTION) is not None and r[EXTRACTION] <= GONE), None)


def rise(row: dict | None, start: dict) -> float | None:
    return row[VAL_LOSS] - start[VAL_LOSS] if row is not None and VAL_LOSS in row else None


def relearned(run: RunRecord, who: str) -> float | None:
    curve = run.summary.get("relearn", {}).get("forget", {}).get(who)
    return curve[-1]["extraction"] if curve else None


def retrained_loss(run: RunRecord) -> float | None:
    """The retrained model's held-out loss, from the marker its cached run wrote (run/base.py)."""
    marker = Path(run.config.unlearn.retrained).parent / "base.json"
    return json.loads(marker.read_text()).get(VAL_LOSS) if marker.exists() else None


def arm_row(name: str, runs: list[RunRecord]) -> str:
    ends = [r.rows[-1] for r in runs]
    starts = [r.rows[0] for r in runs]
    gone = [first_gone(r.rows) for r in runs]
    steps = [str(g["step"]) if g is not None else "never" for g in gone]
    cells = [
        mean_sd([e.get(EXTRACTION) for e in ends]),
        mean_sd([e.get("forget/loss") for e in ends], 2),
        mean_sd([rise(e, s) for e, s in zip(ends, starts)], 3),
        mean_sd([e.get("mem/extraction_rate_train") for e in ends]),
        ", ".join(steps),
        mean_sd([rise(g, s) for g, s in zip(gone, starts)], 3),
        mean_sd([e.get(MIA) for e in ends], 3, [e.get(f"{MIA}_lo") for e in ends], [e.get(f"{MIA}_hi") for e in ends]),
        mean_sd([e.get("forget/privleak/loss") for e in ends], 3),
        mean_sd([e.get("forget/quality") for e in ends], 3),
        mean_sd([relearned(r, "unlearned") for r in runs], 3),
    ]
    seeds = ", ".join(str(r.config.seed) for r in runs)
    return f"| {name} | {seeds} | " + " | ".join(cells) + " |"


def once(values, digits: int = 3) -> str:
    """A figure of the one retrained model that every run reports alike: its distinct values, once each."""
    return mean_sd(set(numbers(values)), digits)


def reference_rows(runs: list[RunRecord]) -> list[str]:
    """The starting model (every run's step 0) and the retrained one, in the table's columns."""
    start = [r.rows[0] for r in runs]
    kept = [r.summary.get("retrained", {}) for r in runs]
    loss = numbers(retrained_loss(r) for r in runs)
    start_loss = numbers(s.get(VAL_LOSS) for s in start)
    retrained_rise = f"{statistics.mean(loss) - statistics.mean(start_loss):.3f}" if loss and start_loss else NONE
    first = (
        f"| starting model (step 0) | – | {once(s.get(EXTRACTION) for s in start)} "
        f"| {once((s.get('forget/loss') for s in start), 2)} | 0 "
        f"| {once(s.get('mem/extraction_rate_train') for s in start)} | – | – "
        f"| {once(s.get(MIA) for s in start)} | – | – | – |"
    )
    second = (
        f"| retrained without the forget set | – | {once(k.get(EXTRACTION) for k in kept)} "
        f"| {once((k.get('forget/loss') for k in kept), 2)} | {retrained_rise} "
        f"| {once(k.get('mem/extraction_rate_train') for k in kept)} | – | – "
        f"| {once(k.get(MIA) for k in kept)} | 0 | – "
        f"| {once(relearned(r, 'retrained') for r in runs)} |"
    )
    return [first, second]


HEADER = (
    "| arm | seeds | forget extraction (end) | forget loss (end) | held-out loss rise (end) "
    "| retained extraction (end) | first step with forget extraction <= 0.05 | held-out loss rise there "
    "| forget-set MIA AUC, loss [95%] (end) | privacy leakage, loss (end) | forget quality, KS p (end) "
    "| forget extraction after relearning |"
)


def unlearning_report(runs: list[RunRecord], out: Path) -> tuple[str, list[Path]] | None:
    """The table (returned, and written to `out`/unlearning.md) and `out`/unlearning.png; None without
    finished unlearning runs."""
    done = [r for r in runs if r.finished and r.config.unlearn.on and r.rows]
    if not done:
        return None
    arms: dict[str, list[RunRecord]] = {}
    for r in sorted(done, key=lambda r: (r.config.unlearn.method, r.config.unlearn.strength, r.config.seed)):
        arms.setdefault(arm(r), []).append(r)
    lines = [HEADER, "|" + "---|" * 12, *reference_rows(done)]
    lines += [arm_row(name, group) for name, group in arms.items()]
    text = "\n".join(lines)
    write_text_atomic(out / "unlearning.md", "# Unlearning\n\n" + text + "\n")
    return text, [plane(arms, done, out / "unlearning.png")]


def plane(arms: dict[str, list[RunRecord]], runs: list[RunRecord], path: Path) -> Path:
    """Every evaluation of every arm (mean over its seeds at each step) in the forget-retain plane."""
    points = []
    for name, group in arms.items():
        for i, row in enumerate(group[0].rows):
            same = [r.rows[i] for r in group if len(r.rows) > i]
            points.append(
                {
                    "method": name,
                    "step": row["step"],
                    "forget": statistics.mean(numbers(r.get(EXTRACTION) for r in same) or [0.0]),
                    "retain_cost": statistics.mean(numbers(rise(r, g.rows[0]) for r, g in zip(same, group)) or [0.0]),
                }
            )
    kept = numbers(r.summary.get("retrained", {}).get(EXTRACTION) for r in runs)
    loss, start = numbers(retrained_loss(r) for r in runs), numbers(r.rows[0].get(VAL_LOSS) for r in runs)
    marked = None
    if kept and loss and start:
        marked = {"forget": statistics.mean(kept), "retain_cost": statistics.mean(loss) - statistics.mean(start)}
    return forget_retain_plane(points, marked, path)
