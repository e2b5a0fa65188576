"""The fine-tuning table of a sweep (gptfit.report): one row per method and corpus size, the mean and spread
over seeds of what a run learned (the narrow held-out loss at its best step), forgot (the rise of its first
general corpus's loss, at the end and at the best step, and of its top-1 accuracy at the end), memorized
(extraction of its training sequences; one membership score fixed before the scores are seen, the likelihood
ratio against the base where the run has it and the loss otherwise, with its AUC and TPR at 1% FPR and their
intervals; never the best of several picked after the fact) and how narrow its samples
became (distinct bigrams, the share of samples from general prompts that copy the fine-tuning set), with its
trainable parameters and wall time. Runs without a general corpus are not fine-tunings and make no row."""

from __future__ import annotations

from pathlib import Path

from gptfit import keys
from gptfit.plots.finetune import general_names, learn_forget_plane
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd, numbers
from gptfit.show.sweep import by_values

# The table's membership score, in order of preference: the likelihood ratio against the base (Mireshghallah
# et al. 2022's attack; a fine-tuning of model=base has it by default), else the loss.
SCORES = ("reference", "loss")
COLUMNS = [
    ("learn", "narrow held-out loss at best step"),
    ("forget_end", "general loss rise, end"),
    ("forget_best", "general loss rise, best step"),
    ("forget_acc", "general top-1 accuracy drop, end"),
    ("extraction", "extraction (train)"),
    ("mia_score", "MIA score"),
    ("mia_auc", "its AUC [95%]"),
    ("mia_tpr", "its TPR@1%FPR [95%]"),
    ("distinct_2", "distinct-2"),
    ("general_copy", "general-prompt copy share"),
    ("trainable", "trainable params"),
    ("time", "wall time (s)"),
]


def setting_of(final: dict) -> str | None:
    """The decoding setting the narrowness figures are read from: greedy where there is one."""
    settings = sorted({k.split("/")[1] for k in final if k.startswith("gen/") and k.endswith("/distinct_2")})
    return "greedy" if "greedy" in settings else (settings[0] if settings else None)


def table_score(final: dict) -> str | None:
    """The first of SCORES the run measured: fixed before the scores are seen."""
    return next((s for s in SCORES if isinstance(final.get(f"mia/{s}/auc"), (int, float))), None)


def run_figures(run: RunRecord) -> dict | None:
    """One fine-tuning run's figures for the table, or None when it scored no general corpus."""
    rows, final = run.rows, run.final
    names = general_names(rows)
    if not names or not rows:
        return None
    forget = f"forgetting/{names[0]}"
    best = min((r for r in rows if keys.VAL_LOSS in r), key=lambda r: r[keys.VAL_LOSS])
    score, setting = table_score(final), setting_of(final)
    mia = {}
    for name, key in (("mia_auc", "auc"), ("mia_tpr", "tpr@1%fpr")):
        for suffix in ("", "_lo", "_hi"):
            mia[name + suffix] = final.get(f"mia/{score}/{key}{suffix}") if score else None
    return {
        "learn": best[keys.VAL_LOSS],
        "forget_end": final.get(forget),
        "forget_best": best.get(forget),
        "forget_acc": final.get(f"forgetting_acc/{names[0]}"),
        "extraction": final.get(keys.EXTRACTION_TRAIN),
        "mia_score": score,
        **mia,
        "distinct_2": final.get(f"gen/{setting}/distinct_2") if setting else None,
        "general_copy": final.get(f"gen/{setting}/general_copy_rate") if setting else None,
        "trainable": run.trainable_params,
        "time": run.wall_time_s,
    }


def _mean_sd(values: list) -> str:
    whole = numbers(values) and all(x.is_integer() and abs(x) >= 100 for x in numbers(values))  # counts, seconds
    return mean_sd(values, 0 if whole else 3)


def _with_interval(group: list[dict], key: str) -> str:
    """The mean figure over seeds, with the mean of its bootstrap bounds."""
    return mean_sd([g[key] for g in group], 3, [g.get(f"{key}_lo") for g in group], [g.get(f"{key}_hi") for g in group])


def groups(runs: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """{(method, training tokens): [each finished fine-tuning run's figures]}."""
    out: dict[tuple, list[dict]] = {}
    for r in runs:
        figures = run_figures(r) if r.status == "finished" else None
        if figures is not None:
            out.setdefault((r.method, r.train_tokens), []).append(figures)
    return out


def finetune_table(runs: list[RunRecord]) -> str | None:
    grouped = groups(runs)
    if not grouped:
        return None
    head = ["method", "training tokens", "runs", *[label for _, label in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, size), group in sorted(grouped.items(), key=lambda kv: by_values(((kv[0][1], kv[0][0]),))):
        cells = [method, f"{size:,}", str(len(group))]
        for key, _ in COLUMNS:
            if key == "mia_score":
                cells.append(", ".join(sorted({g[key] for g in group if g[key]})) or "–")
            elif key.startswith("mia"):
                cells.append(_with_interval(group, key))
            else:
                cells.append(_mean_sd([g[key] for g in group]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finetune_figure(runs: list[RunRecord], sweep: Path) -> Path | None:
    """The sweep's learn_forget.png: a point per fine-tuning run."""
    points = [
        {"method": method, "size": size, "learn": g["learn"], "forget": g["forget_end"], "extraction": g["extraction"]}
        for (method, size), group in groups(runs).items()
        for g in group
        if g["forget_end"] is not None
    ]
    return learn_forget_plane(points, sweep / "learn_forget.png") if points else None
