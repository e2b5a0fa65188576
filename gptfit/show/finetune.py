"""The fine-tuning table of a sweep (gptfit.report): one row per method and corpus size, the mean and spread
over seeds of what a run learned (the narrow held-out loss at its best step), forgot (the rise of its first
general corpus's loss, at the end and at the best step), memorized (extraction of its training sequences, the
best single-model membership score's AUC and TPR at 1% FPR with their intervals) and how narrow its samples
became (distinct bigrams, the share of samples from general prompts that copy the fine-tuning set), with its
trainable parameters and wall time. Runs without a general corpus are not fine-tunings and make no row."""

from __future__ import annotations

from pathlib import Path

from gptfit import keys
from gptfit.plots.finetune import general_names, learn_forget_plane
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd, numbers
from gptfit.show.sweep import by_values

# The membership scores of one model; `blind` reads no model and `reference` needs a second one.
SINGLE_MODEL = ("loss", "zlib", "min_k", "min_k_plus_plus")
COLUMNS = [
    ("learn", "narrow held-out loss at best step"),
    ("forget_end", "general loss rise, end"),
    ("forget_best", "general loss rise, best step"),
    ("extraction", "extraction (train)"),
    ("mia_auc", "best MIA AUC [95%]"),
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


def best_score(final: dict) -> str | None:
    aucs = {s: final.get(f"mia/{s}/auc") for s in SINGLE_MODEL}
    aucs = {s: v for s, v in aucs.items() if isinstance(v, (int, float))}
    return max(aucs, key=aucs.get) if aucs else None


def run_figures(run: RunRecord) -> dict | None:
    """One fine-tuning run's figures for the table, or None when it scored no general corpus."""
    rows, final = run.rows, run.final
    names = general_names(rows)
    if not names or not rows:
        return None
    forget = f"forgetting/{names[0]}"
    best = min((r for r in rows if keys.VAL_LOSS in r), key=lambda r: r[keys.VAL_LOSS])
    score, setting = best_score(final), setting_of(final)
    mia = {}
    for name, key in (("mia_auc", "auc"), ("mia_tpr", "tpr@1%fpr")):
        for suffix in ("", "_lo", "_hi"):
            mia[name + suffix] = final.get(f"mia/{score}/{key}{suffix}") if score else None
    return {
        "learn": best[keys.VAL_LOSS],
        "forget_end": final.get(forget),
        "forget_best": best.get(forget),
        "extraction": final.get(keys.EXTRACTION_TRAIN),
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
            cells.append(_with_interval(group, key) if key.startswith("mia") else _mean_sd([g[key] for g in group]))
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
