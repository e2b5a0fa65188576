"""The mitigation table of a study (gptfit.report on runs that plant a duplication ladder under several
mitigation arms, as +experiment=mitigations and mitigations_finetune do, whatever the runs are named):
one row per arm, named from the run's config (not its folder), its seeds pooled; an `early stopping` row beside
each unmitigated arm, read from the same runs' best/ model (the summary's `early_stopping` and
`sequences_best.parquet`). Each arm: what it costs (held-out loss at the end and at its best evaluation, bits
per byte, the general corpus's loss for fine-tunings, wall time) against what is left memorized (extraction of
ordinary training text and of the planted duplicates, the fewest copies at which half the planted sequences are
extracted, canary exposure, the `loss`, `min_k_plus_plus` and `rmia` membership scores) and, for DP-SGD, the
epsilon spent.

Every figure of a run comes from its summary (`final`, or `early_stopping` with the metrics row of the best
step) or from its per-sequence tables; `per_run` holds them one row per run and model (final or best), and the
table, its CSV and the figure are drawn from that frame alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gptfit import keys
from gptfit.config import DataConfig, ModelConfig, TrainConfig
from gptfit.files import write_text_atomic
from gptfit.plots.mitigations import quality_memorization
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd

SCORES = ("loss", "min_k_plus_plus", "rmia")
UNCLIPPED = 1e5  # a DP clip bound (train.dp.max_grad_norm) at or above it clips nothing: DP's sampling alone
LEVEL = 0.5  # the extraction rate that the copy-count column asks for
FINETUNE = "fine-tune: "
# Families in the table's order; a run mitigated in two ways is `combined`, after them.
FAMILIES = ("none", "early stopping", "goldfish", "dedup", "DP-SGD", "weight decay", "dropout", "combined")


@dataclass(frozen=True, order=True)
class Arm:
    """A mitigation arm; sorts from-scratch before fine-tuning, then by family and its strength."""

    finetune: bool
    rank: int
    value: float
    label: str

    @property
    def name(self) -> str:
        return (FINETUNE if self.finetune else "") + self.label


def _dp_arm(dp) -> tuple[float, str]:
    """(strength, label) of a DP-SGD arm: an epsilon target; a fixed noise after every target; and DP's two
    controls without noise last: clipping only, and DP's sampling alone (a clip bound no gradient reaches)."""
    if dp.target_epsilon is not None:
        return dp.target_epsilon, f"DP-SGD eps={dp.target_epsilon:g}"
    if dp.noise_multiplier:
        return 1e9 + dp.noise_multiplier, f"DP-SGD sigma={dp.noise_multiplier:g}"
    if dp.max_grad_norm >= UNCLIPPED:
        return 3e9, "DP sampling, no clipping or noise"
    return 2e9, f"DP clipping only (C={dp.max_grad_norm:g})"


def arm_of(model: ModelConfig, data: DataConfig, train: TrainConfig, steps: int | None = None) -> Arm:
    """The arm a run's config puts it in: each mitigation that differs from the unmitigated run (no goldfish,
    no deduplication, no DP-SGD, weight decay 0, dropout 0), e.g. `goldfish k=4`, `DP-SGD eps=8`. With the
    study's usual `steps`, a run trained for another number of steps says how many (`dedup ..., 417 steps`)."""
    goldfish, dedup, dp = train.goldfish.k, data.dedup.min_tokens, train.dp
    parts = []  # (family, strength, label)
    if goldfish:
        per_document = " per document" if train.goldfish.context == "document" else ""
        parts.append(("goldfish", goldfish, f"goldfish k={goldfish}{per_document}"))
    if dedup:
        every_copy = ", every copy" if data.dedup.keep == "none" else ""
        parts.append(("dedup", dedup, f"dedup >={dedup} tokens{every_copy}"))
    if dp.on:
        parts.append(("DP-SGD", *_dp_arm(dp)))
    if train.weight_decay:
        parts.append(("weight decay", train.weight_decay, f"weight decay {float(train.weight_decay)}"))
    if model.dropout:
        parts.append(("dropout", model.dropout, f"dropout {float(model.dropout)}"))
    if len(parts) == 1:
        family, value = parts[0][0], float(parts[0][1])
    else:
        family, value = ("combined" if parts else "none"), 0.0
    label = " + ".join(p[2] for p in parts) or "none"
    if steps is not None and train.max_steps != steps:
        label = f"{label}, {train.max_steps} steps"
    return Arm(model.kind == "base", FAMILIES.index(family), value, label)


def run_arm(run: RunRecord, steps: int | None = None) -> Arm:
    return arm_of(run.config.model, run.config.data, run.config.train, steps)


def usual_steps(runs: list[RunRecord]) -> dict[bool, int]:
    """{fine-tuning?: the most common train.max_steps} of the study's runs, from scratch and fine-tuned."""
    steps: dict[bool, list[int]] = {}
    for run in runs:
        steps.setdefault(run.config.model.kind == "base", []).append(run.config.train.max_steps)
    return {kind: max(set(s), key=s.count) for kind, s in steps.items()}


def early_stopping_arm(arm: Arm) -> Arm:
    return Arm(arm.finetune, FAMILIES.index("early stopping"), 0.0, "early stopping")


def ladder_rates(last: pd.DataFrame) -> pd.Series:
    """{copies: extraction rate} of the planted duplicates (copies >= 1) in the last evaluation's rows of a
    per-sequence table: the mean of `extracted` over each copy count's rows."""
    planted = last[(last["kind"] == "duplicate") & (last["copies"] > 0)]
    return planted.groupby("copies")["extracted"].mean()


def copies_to_reach(rates: pd.Series, level: float = LEVEL) -> int | None:
    """The smallest copy count whose extraction rate reaches `level`; None when no count does."""
    reached = rates.index[rates >= level]
    return int(reached.min()) if len(reached) else None


def mitigation_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs of a mitigation study, found by what they hold whatever their `name`: the finished runs that
    plant a duplication ladder (data.duplicates), where their configs make more than one arm or a mitigated
    one. A duplication ladder without mitigations (one unmitigated arm) is no mitigation study."""
    planted = [r for r in runs if r.finished and r.config.data.duplicates.on]
    found = {run_arm(r).name for r in planted}
    return planted if len(found) > 1 or found - {"none", FINETUNE + "none"} else []


def _row_at(rows: list[dict], step: int) -> dict:
    """The metrics row of `step` that holds the held-out loss (an evaluation's)."""
    return next((r for r in rows if r.get("step") == step and keys.VAL_LOSS in r), {})


def _kept(key: str) -> bool:
    """The summary keys the table reads beside the fixed ones: general corpus losses, canary exposures and
    the two membership scores' figures."""
    return (
        (key.startswith("general/") and key.endswith("/loss"))
        or (key.startswith("canary/") and key.endswith("/exposure"))
        or key.startswith(tuple(f"mia/{s}/" for s in SCORES))
    )


def _best_step(run: RunRecord) -> tuple[int | None, float | None]:
    """(step, held-out loss) of the run's lowest held-out loss among its evaluations."""
    evaluated = [r for r in run.rows if keys.VAL_LOSS in r]
    if not evaluated:
        return None, None
    best = min(evaluated, key=lambda r: r[keys.VAL_LOSS])
    return best["step"], best[keys.VAL_LOSS]


def record(run: RunRecord, best: bool, steps: int | None = None) -> dict:
    """One row of `per_run`: a run's final model, or (best=True) its best/ model."""
    summary = run.summary
    arm = run_arm(run, steps)
    best_step, best_loss = _best_step(run)
    if best:
        es = summary["early_stopping"]
        figures = {**_row_at(run.rows, es["step"]), **es}  # the summary's rescoring wins over the row's
        arm = early_stopping_arm(arm)
    else:
        figures = run.final
    last = run.last_table(best, columns=["kind", "copies", "extracted"])
    rates = ladder_rates(last.to_pandas()) if last is not None else pd.Series(dtype=float)
    return {
        "arm": arm.name,
        "order": (arm.finetune, arm.rank, arm.value),
        "finetune": arm.finetune,
        "model": "best" if best else "final",
        "job": run.job,
        "seed": run.config.seed,
        "step": figures.get("step"),
        keys.VAL_LOSS: figures.get(keys.VAL_LOSS),
        "best_val_loss": best_loss,
        "best_step": best_step,
        keys.VAL_BPB: figures.get(keys.VAL_BPB),
        keys.EXTRACTION_TRAIN: figures.get(keys.EXTRACTION_TRAIN),
        "planted_extraction": float(rates.mean()) if len(rates) else None,  # every count has per_count rows
        "copies_to_half": copies_to_reach(rates),
        **{f"planted/{c}": float(v) for c, v in rates.items()},
        **{k: v for k, v in figures.items() if _kept(k)},
        "privacy/epsilon": None if best else figures.get("privacy/epsilon"),
        "wall_time_s": run.wall_time_s,
        "tpr_null": summary.get("mia_null", {}).get("tpr@1%fpr"),
    }


def per_run(runs: list[RunRecord]) -> pd.DataFrame | None:
    """One row per finished mitigation run's final model, and one per unmitigated run's best/ model, in the
    table's order."""
    records = []
    found = mitigation_runs(runs)
    usual = usual_steps(found)
    for run in found:
        steps = usual[run.config.model.kind == "base"]
        records.append(record(run, best=False, steps=steps))
        if run_arm(run, steps).label == "none" and run.summary.get("early_stopping"):
            records.append(record(run, best=True, steps=steps))
    if not records:
        return None
    records.sort(key=lambda r: (r["order"], r["seed"] if isinstance(r["seed"], int) else 0))
    return pd.DataFrame(records)


def _numbers(group: pd.DataFrame, key: str) -> pd.Series:
    return group[key].dropna().astype(float) if key in group else pd.Series(dtype=float)


def _interval(group: pd.DataFrame, key: str) -> str:
    """The mean (± sd) over seeds, with the mean of the runs' 95% bootstrap bounds; `n/a` for a TPR the
    runs could not measure."""
    values = _numbers(group, key)
    if values.empty:
        return "n/a" if "tpr@" in key else "–"
    return mean_sd(values, 3, _numbers(group, f"{key}_lo"), _numbers(group, f"{key}_hi"))


def pooled_copies(group: pd.DataFrame) -> int | None:
    """The copy-count threshold of the arm's seeds together: of each count's extraction rate averaged over
    the seeds (every seed plants as many sequences per count, so this is the rate of the pooled rows)."""
    rates = group[[c for c in group if c.startswith("planted/")]].mean()
    return copies_to_reach(pd.Series(rates.to_numpy(), index=[int(c.split("/")[1]) for c in rates.index]))


def _count(copies) -> str:
    return "none" if copies is None or pd.isna(copies) else str(int(copies))


def _copies(group: pd.DataFrame) -> str:
    if group["planted_extraction"].isna().all():
        return "–"
    each = [_count(v) for v in group["copies_to_half"]]
    return _count(pooled_copies(group)) + (f" ({', '.join(each)})" if len(set(each)) > 1 else "")


def _names(frame: pd.DataFrame, prefix: str, suffix: str) -> list[str]:
    """The <name>s of the frame's `<prefix><name><suffix>` columns: general corpora, canaries."""
    return sorted({k[len(prefix) : -len(suffix)] for k in frame if k.startswith(prefix) and k.endswith(suffix)})


def columns(frame: pd.DataFrame) -> list[tuple[str, object]]:
    """(header, cell of an arm's rows) of every column the frame has figures for."""
    cols = [
        ("seeds", lambda g: ", ".join(str(s) for s in g["seed"])),
        ("held-out loss, end", lambda g: mean_sd(_numbers(g, keys.VAL_LOSS))),
        ("held-out loss, best step (step)", _best),
        ("held-out bpb", lambda g: mean_sd(_numbers(g, keys.VAL_BPB))),
    ]
    for name in _names(frame, "general/", "/loss"):
        cols.append((f"general loss ({name})", lambda g, k=f"general/{name}/loss": mean_sd(_numbers(g, k))))
    cols += [
        ("extraction (ordinary text)", lambda g: mean_sd(_numbers(g, keys.EXTRACTION_TRAIN))),
        ("extraction (planted)", lambda g: mean_sd(_numbers(g, "planted_extraction"))),
        (f"copies to {LEVEL:.0%} extraction", _copies),
    ]
    for name in _names(frame, "canary/", "/exposure"):
        cols.append((f"exposure: {name}", lambda g, k=f"canary/{name}/exposure": mean_sd(_numbers(g, k), 1)))
    for score in [s for s in SCORES if f"mia/{s}/auc" in frame]:
        cols.append((f"{score} AUC [95%]", lambda g, k=f"mia/{score}/auc": _interval(g, k)))
        cols.append((f"{score} TPR@1%FPR [95%]", lambda g, k=f"mia/{score}/tpr@1%fpr": _interval(g, k)))
    cols += [
        ("epsilon", lambda g: mean_sd(_numbers(g, "privacy/epsilon"), 2)),
        ("wall time (s)", lambda g: mean_sd(_numbers(g, "wall_time_s"), 0)),
    ]
    return cols


def _best(group: pd.DataFrame) -> str:
    """The held-out loss at each run's best evaluation, with the steps it came at."""
    steps = sorted({int(s) for s in group["best_step"].dropna()})
    loss = mean_sd(_numbers(group, "best_val_loss"))
    return f"{loss} ({', '.join(map(str, steps))})" if steps else loss


def arms(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(arm, its rows), in the table's order."""
    return [(arm, frame[frame["arm"] == arm]) for arm in dict.fromkeys(frame["arm"])]


CAPTION = (
    "One row per arm, named from its runs' configs; `fine-tune: ` arms fine-tune the base model (model.kind=base) "
    "on another corpus, so their held-out loss is not comparable with the from-scratch arms'. A cell is the mean "
    "over the arm's seeds, ± their standard deviation where there are several. An interval in brackets is the "
    "mean of the runs' own 95% bootstrap bounds (resampling documents): the uncertainty of one run's figure, "
    "not of the mean over seeds, whose spread between seeds is the ± beside it. `early stopping` is the same "
    "runs' best/ model (lowest val/loss), rescored at the end: its held-out loss is that of its step, and its "
    "wall time the whole run's, since the best step is known only after it. Copies to {level:.0%} extraction: "
    "the smallest number of copies whose planted sequences are extracted at a rate of {level} or more at the "
    "last evaluation (the rate of each count averaged over the seeds; each seed's own count in parentheses "
    "where they differ); `none`: no count of the ladder reaches it. For deduplication the count is the number "
    "planted, before one copy of each was left. Held-out loss, best step: the lowest held-out loss among each "
    "run's evaluations, with the steps it came at. `rmia`: against the runs' reference model "
    "(eval.mia.reference), where they had one. An arm trained for another number of steps than the study's "
    "other runs says how many."
)


def _reasons(reasons: pd.Series) -> str:
    """The runs' reasons for a missing TPR, each said once with the runs' counts joined
    (`needs at least 1000 non-members (10 / 0.01); there are 57 or 59`)."""
    counts: dict[str, set[str]] = {}
    for reason in reasons:
        head, _, count = reason.partition("; there are ")
        counts.setdefault(head, set()).update([count] if count else [])
    return "; ".join(
        head + (f"; there are {' or '.join(sorted(c, key=_numeric))}" if c else "") for head, c in counts.items()
    )


def _numeric(text: str) -> tuple:
    return (0, int(text), text) if text.isdigit() else (1, 0, text)


def mitigation_table(frame: pd.DataFrame) -> str:
    """The caption, the markdown table (a row per arm) and its footnotes."""
    cols = columns(frame)
    head = ["arm", *[h for h, _ in cols]]
    lines = [CAPTION.format(level=LEVEL), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, group in arms(frame):
        lines.append("| " + " | ".join([arm, *[cell(group) for _, cell in cols]]) + " |")
    notes = []
    for finetune, label in ((False, "from scratch"), (True, "fine-tunings")):
        mine = frame[(frame["finetune"] == finetune) & frame["tpr_null"].notna()]
        unmeasured = [f"mia/{s}/tpr@1%fpr" for s in SCORES if f"mia/{s}/tpr@1%fpr" in mine]
        if not mine.empty and any(mine[k].isna().any() for k in unmeasured):
            notes.append(f"{label}: {_reasons(mine['tpr_null'])}")
    if notes:
        lines += ["", "n/a: the runs could not measure a TPR at 1% FPR (" + "; ".join(notes) + ")."]
    return "\n".join(lines)


def _mean(group: pd.DataFrame, key: str) -> float | None:
    values = _numbers(group, key)
    return float(values.mean()) if len(values) else None


def figure_points(frame: pd.DataFrame) -> list[dict]:
    """A point per arm for plots.mitigations: the means over its seeds."""
    points = []
    for arm, group in arms(frame):
        points.append(
            {
                "arm": arm.removeprefix(FINETUNE),
                "finetune": bool(group["finetune"].iloc[0]),
                "loss": _mean(group, keys.VAL_LOSS),
                "loss_sd": float(_numbers(group, keys.VAL_LOSS).std())
                if _numbers(group, keys.VAL_LOSS).size > 1
                else 0.0,
                "auc": _mean(group, "mia/loss/auc"),
                "auc_lo": _mean(group, "mia/loss/auc_lo"),
                "auc_hi": _mean(group, "mia/loss/auc_hi"),
                "planted": _mean(group, "planted_extraction"),
            }
        )
    return [p for p in points if p["loss"] is not None]


def mitigation_report(runs: list[RunRecord], out: Path) -> tuple[str, list[Path]] | None:
    """The table (returned, and written to `out`/mitigations.md), the per-run figures behind it
    (mitigations.csv) and the quality-memorization figure (mitigations.png); None without mitigation runs."""
    frame = per_run(runs)
    if frame is None:
        return None
    text = mitigation_table(frame)
    write_text_atomic(out / "mitigations.md", "# Mitigations\n\n" + text + "\n")
    write_text_atomic(out / "mitigations.csv", frame.drop(columns="order").to_csv(index=False))
    figure = quality_memorization(figure_points(frame), out / "mitigations.png")
    return text, [out / "mitigations.md", out / "mitigations.csv", figure]
