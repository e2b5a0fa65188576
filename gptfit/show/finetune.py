"""The fine-tuning table of a sweep (gptfit.report): one row per method and corpus size, the mean and spread
over seeds of what a run learned (the narrow held-out loss at its best step), forgot (the rise of its first
general corpus's loss, at the end and at the best step, and of its top-1 accuracy at the end), memorized
(extraction of its training sequences; one membership score fixed before the scores are seen, the likelihood
ratio against the base where the run has it and the loss otherwise, with its AUC and TPR at 1% FPR and their
intervals; never the best of several picked after the fact) and how narrow its samples
became (distinct bigrams, the share of samples from general prompts that copy the fine-tuning set), with its
trainable parameters and wall time. Runs without a general corpus are not fine-tunings and make no row.

A row is a method (LoRA with its rank where it is not 8), a corpus size and a learning rate. Where a method ran
at several rates, the rate with the lowest narrow held-out loss at the best step is named as its choice; the
best step is shown beside the last, so a rate whose best step was its last (still learning) is seen as such.
The trajectories figure draws every evaluation of every run on Biderman et al.'s learn-forget plane with the
plane's Pareto frontier, and `frontier_note` says which runs' evaluations make it up."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors.torch import load_file

from gptfit import keys
from gptfit.metrics.spectrum import SHARE, change_ranks
from gptfit.plots.finetune import general_names, learn_forget_plane, learn_forget_trajectories
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd, numbers
from gptfit.show.sweep import by_values

# The table's membership score, in order of preference: the likelihood ratio against the base (Mireshghallah
# et al. 2022's attack; a fine-tuning of model=base has it by default), else the loss.
SCORES = ("reference", "loss")
COLUMNS = [
    ("learn", "narrow held-out loss at best step"),
    ("best_step", "best step / last"),
    ("forget_end", "general loss rise, end"),
    ("forget_best", "general loss rise, best step"),
    ("forget_acc", "general top-1 accuracy drop, end"),
    ("extraction", "extraction (train)"),
    ("mia_score", "MIA score"),
    ("mia_auc", "its AUC [95%]"),
    ("mia_tpr", "its TPR@1%FPR [95%]"),
    ("distinct_2", "distinct-2"),
    ("general_copy", "general-prompt copy share"),
    ("exposure", "exposure of planted secrets (bits, of max)"),
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
        "best_step": f"{best['step']} / {rows[-1]['step']}",
        "forget_end": final.get(forget),
        "forget_best": best.get(forget),
        "forget_acc": final.get(f"forgetting_acc/{names[0]}"),
        "extraction": final.get(keys.EXTRACTION_TRAIN),
        "mia_score": score,
        **mia,
        "distinct_2": final.get(f"gen/{setting}/distinct_2") if setting else None,
        "general_copy": final.get(f"gen/{setting}/general_copy_rate") if setting else None,
        "exposure": _exposures(run),
        "trainable": run.trainable_params,
        "time": run.wall_time_s,
    }


def method_of(run: RunRecord) -> str:
    """The method, with LoRA's rank where it is not the default 8: `full`, `lora`, `lora r=32`, ..."""
    lora = run.config.train.lora
    return f"lora r={lora.r}" if run.method == "lora" and lora.r != 8 else run.method


def _exposures(run: RunRecord) -> str | None:
    """Each planted secret's exposure at the end, of its maximum (log2 of its fillings): `once 4.1/13.3`."""
    secrets = run.summary.get("canaries") or []
    cells = [f"{c['name']} {c['exposure']:.1f}/{math.log2(c['space_size']):.1f}" for c in secrets if "exposure" in c]
    return ", ".join(cells) or None


def _mean_sd(values: list) -> str:
    whole = numbers(values) and all(x.is_integer() and abs(x) >= 100 for x in numbers(values))  # counts, seconds
    return mean_sd(values, 0 if whole else 3)


def _with_interval(group: list[dict], key: str) -> str:
    """The mean figure over seeds, with the mean of its bootstrap bounds."""
    return mean_sd([g[key] for g in group], 3, [g.get(f"{key}_lo") for g in group], [g.get(f"{key}_hi") for g in group])


def groups(runs: list[RunRecord]) -> dict[tuple, list[dict]]:
    """{(method, training tokens, learning rate): [each finished fine-tuning run's figures]}."""
    out: dict[tuple, list[dict]] = {}
    for r in runs:
        figures = run_figures(r) if r.status == "finished" else None
        if figures is not None:
            out.setdefault((method_of(r), r.train_tokens, r.config.train.lr), []).append(figures)
    return out


def chosen_rates(grouped: dict[tuple, list[dict]]) -> dict[tuple, float]:
    """{(method, size): its learning rate with the lowest mean narrow held-out loss at the best step}, for the
    methods that ran at more than one rate."""
    by_method: dict[tuple, dict[float, float]] = {}
    for (method, size, lr), group in grouped.items():
        by_method.setdefault((method, size), {})[lr] = sum(g["learn"] for g in group) / len(group)
    return {key: min(rates, key=rates.get) for key, rates in by_method.items() if len(rates) > 1}


def finetune_table(runs: list[RunRecord]) -> str | None:
    grouped = groups(runs)
    if not grouped:
        return None
    chosen = chosen_rates(grouped)
    head = ["method", "training tokens", "learning rate", "runs", *[label for _, label in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(grouped.items(), key=lambda kv: by_values(((kv[0][1], kv[0][0], kv[0][2]),)))
    for (method, size, lr), group in order:
        mark = " (chosen)" if chosen.get((method, size)) == lr else ""
        cells = [method, f"{size:,}", f"{lr:g}{mark}", str(len(group))]
        for key, _ in COLUMNS:
            if key in ("mia_score", "best_step", "exposure"):
                cells.append("; ".join(dict.fromkeys(g[key] for g in group if g[key])) or "–")
            elif key.startswith("mia"):
                cells.append(_with_interval(group, key))
            else:
                cells.append(_mean_sd([g[key] for g in group]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finetune_figures(runs: list[RunRecord], sweep: Path) -> list[Path]:
    """The sweep's learn_forget.png (a point per fine-tuning run) and learn_forget_trajectories.png (every
    evaluation, with the Pareto frontier)."""
    figures = [finetune_figure(runs, sweep)]
    lines = trajectories(runs)
    if lines:
        figures.append(learn_forget_trajectories(lines, pareto(lines), sweep / "learn_forget_trajectories.png"))
    return [f for f in figures if f is not None]


def finetune_figure(runs: list[RunRecord], sweep: Path) -> Path | None:
    """The sweep's learn_forget.png: a point per fine-tuning run."""
    points = [
        {"method": method, "size": size, "learn": g["learn"], "forget": g["forget_end"], "extraction": g["extraction"]}
        for (method, size, _lr), group in groups(runs).items()
        for g in group
        if g["forget_end"] is not None
    ]
    return learn_forget_plane(points, sweep / "learn_forget.png") if points else None


def trajectories(runs: list[RunRecord]) -> list[dict]:
    """Every finished fine-tuning run's evaluations after step 0 on the learn-forget plane: {"method", "lr",
    "size", "points": [(step, narrow held-out loss, general loss rise)]}."""
    lines = []
    for r in runs:
        names = general_names(r.rows) if r.status == "finished" else []
        if not names:
            continue
        forget = f"forgetting/{names[0]}"
        points = [
            (row["step"], row[keys.VAL_LOSS], row[forget])
            for row in r.rows
            if row.get("step") and keys.VAL_LOSS in row and isinstance(row.get(forget), (int, float))
        ]
        if points:
            lines.append({"method": method_of(r), "lr": r.config.train.lr, "size": r.train_tokens, "points": points})
    return lines


def pareto(lines: list[dict]) -> list[dict]:
    """The evaluations no other evaluation beats on both axes (lower narrow loss and lower forgetting), in
    order of the narrow loss: {"method", "lr", "step", "learn", "forget"}."""
    every = [
        {"method": ln["method"], "lr": ln["lr"], "step": step, "learn": learn, "forget": forget}
        for ln in lines
        for step, learn, forget in ln["points"]
    ]
    points = sorted(every, key=lambda p: (p["learn"], p["forget"]))
    front, lowest = [], math.inf
    for p in points:
        if p["forget"] < lowest:
            front.append(p)
            lowest = p["forget"]
    return front


def frontier_note(front: list[dict]) -> str:
    """Which runs' evaluations make up the Pareto frontier, from least learned to most."""
    if not front:
        return ""
    cells = [f"{p['method']} lr {p['lr']:g} step {p['step']} ({p['learn']:.3f}, {p['forget']:.3f})" for p in front]
    shares = {m: sum(p["method"] == m for p in front) for m in dict.fromkeys(p["method"] for p in front)}
    owners = ", ".join(f"{m} {n}" for m, n in shares.items())
    return (
        f"The learn-forget plane's Pareto frontier over every evaluation of every run ({len(front)} points: "
        f"{owners}), from least learned to most, as (narrow held-out loss, general loss rise): "
        + "; ".join(cells)
        + "."
    )


def spectrum_table(runs: list[RunRecord]) -> str | None:
    """For each full fine-tuning whose base and final model are on disk, the rank explaining 90% of each weight
    matrix's change (Biderman et al.'s spectrum), one column per run; None without such runs."""
    columns: dict[str, dict[str, dict]] = {}
    for r in runs:
        base = r.config.model.init_from if r.status == "finished" and r.method == "full" else None
        tuned = r.dir / "final" / "model.safetensors"
        if base and (Path(base) / "model.safetensors").exists() and tuned.exists():
            before, after = load_file(str(Path(base) / "model.safetensors")), load_file(str(tuned))
            label = f"full, {r.train_tokens:,} tokens, lr {r.config.train.lr:g}, seed {r.config.seed}"
            columns[label] = {row["matrix"]: row for row in change_ranks(before, after)}
    if not columns:
        return None
    matrices = list(dict.fromkeys(m for col in columns.values() for m in col))
    head = ["weight matrix", "full rank", *[f"rank at {SHARE:.0%}: {label}" for label in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in matrices:
        full = next(col[m]["full_rank"] for col in columns.values() if m in col)
        cells = [str(col[m]["rank"]) if m in col else "–" for col in columns.values()]
        lines.append(f"| {m} | {full} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matched_loss(runs: list[RunRecord]) -> str | None:
    """Membership at matched utility (Mireshghallah et al. 2022 compare methods at equal held-out perplexity):
    the narrow held-out loss every run reached at a table evaluation (the highest of the runs' lowest), and, for
    each run, its first table evaluation at or below it: its step and loss, the membership AUC against the base
    (`reference`) and each planted secret's exposure there. None with fewer than two fine-tuning runs."""
    tables = {}
    for r in runs:
        rows = [row for row in r.rows if "mia/reference/auc" in row and keys.VAL_LOSS in row]
        if r.status == "finished" and rows:
            tables[f"{method_of(r)}, lr {r.config.train.lr:g}, seed {r.config.seed}"] = rows
    if len(tables) < 2:
        return None
    level = max(min(row[keys.VAL_LOSS] for row in rows) for rows in tables.values())
    secrets = sorted({k for rows in tables.values() for k in rows[-1] if k.endswith("/exposure")})
    head = ["run", "step", "narrow held-out loss", "membership AUC vs the base", *secrets]
    lines = [
        f"At matched narrow held-out loss: each run's first table evaluation at or below {level:.3f} nats, the "
        "level every run reached (intervals are bootstrapped at the last evaluation only, so none here).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, rows in tables.items():
        row = next(row for row in rows if row[keys.VAL_LOSS] <= level)
        cells = [f"{row['step']}", f"{row[keys.VAL_LOSS]:.3f}", f"{row['mia/reference/auc']:.3f}"]
        cells += [f"{row[k]:.1f}" if isinstance(row.get(k), (int, float)) else "–" for k in secrets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
