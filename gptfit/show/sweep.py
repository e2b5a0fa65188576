"""What a sweep's runs hold, read and tabulated: each job's overrides, summary and metrics, the summary
table, the means over seeds, the decoding and grammar tables, and the trends with corpus size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gptfit.errors import UserError
from gptfit.keys import EXTRACTION_TRAIN, GAP, MIA_AUC, TRAIN_LOSS, VAL_LOSS
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd

SIZE = "data.train_tokens"

COLUMNS = [
    (TRAIN_LOSS, "train loss"),
    (VAL_LOSS, "val loss"),
    (GAP, GAP),
    (EXTRACTION_TRAIN, "extraction"),
    ("mem/exact_match_train", "exact match train"),
    ("mem/exact_match_val", "exact match val"),
    (MIA_AUC, "MIA AUC"),
]

TRENDS = [(GAP, GAP), (EXTRACTION_TRAIN, "extraction rate"), (VAL_LOSS, "final val loss")]


def read_sweep(sweep: Path) -> list[RunRecord]:
    if not sweep.is_dir():
        raise UserError(f"{sweep}: no such sweep directory")
    jobs = sorted(
        (d for d in sweep.iterdir() if d.is_dir() and (d / ".hydra").is_dir()),
        key=lambda d: int(d.name) if d.name.isdigit() else 10**9,
    )
    if not jobs:
        raise UserError(f"{sweep}: no job directories (with .hydra/) inside; give the folder of a multirun")
    return [RunRecord.read(j) for j in jobs]


def read_sweeps(sweeps: list[Path]) -> tuple[Path, list[RunRecord]]:
    """(the folder a report of `sweeps` goes to, their runs): one sweep's own folder, or for several (a study
    run as a few multiruns) their closest common folder, each job then named by its path from there (`a/0`)
    so that `<folder>/<job>` stays the run's folder."""
    if len(set(sweeps)) == 1:
        return Path(sweeps[0]), read_sweep(Path(sweeps[0]))
    sweeps = list(dict.fromkeys(Path(s).resolve() for s in sweeps))  # a folder given twice is read once
    out = Path(os.path.commonpath(sweeps))
    runs = []
    for sweep in sweeps:
        for r in read_sweep(sweep):
            runs.append(r.renamed(r.dir.relative_to(out).as_posix()))
    return out, runs


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 points."""
    if len(x) < 3:
        return None

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def settings_of(runs: list[RunRecord]) -> list[str]:
    names = {k.split("/")[1] for r in runs for k in r.final if k.startswith("gen/") and k.endswith("/copy_rate")}
    return sorted(names)


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def with_interval(figures: dict, key: str) -> str:
    """A figure with its 95% interval (`key_lo`, `key_hi`) when it has one; a dash when it is null."""
    value, lo, hi = figures.get(key), figures.get(f"{key}_lo"), figures.get(f"{key}_hi")
    if value is None:
        return "–"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{value:.3f}"


def varying(runs: list[RunRecord]) -> tuple[list[str], dict]:
    """(override keys whose value differs between runs, {key: value} of the overrides all runs share)."""
    keys = sorted({k for r in runs for k in r.swept})
    values = {k: {json.dumps(r.swept.get(k), default=str) for r in runs} for k in keys}
    swept = [k for k in keys if len(values[k]) > 1]
    fixed = {k: runs[0].swept.get(k) for k in keys if len(values[k]) == 1}
    return swept, fixed


def table(runs: list[RunRecord], swept: list[str]) -> str:
    settings = settings_of(runs)
    head = ["job", *swept, "status", *[label for _, label in COLUMNS], *[f"copy {s}" for s in settings]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        f = r.final if r.status == "finished" else {}
        cells = [
            r.job,
            *[fmt(r.swept.get(k)) for k in swept],
            r.status + (f" ({r.error})" if r.error else ""),
        ]
        cells += [fmt(f.get(key)) for key, _ in COLUMNS]
        cells += [fmt(f.get(f"gen/{s}/copy_rate")) for s in settings]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_values(item: tuple) -> list:
    """Sort key of a (swept values, ...) pair: numbers in numeric order (1024 before 16384), then text."""
    return [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in item[0]]


def seed_table(runs: list[RunRecord], swept: list[str]) -> str:
    keys = [k for k in swept if k != "seed"]
    groups: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        if r.status == "finished":
            groups.setdefault(tuple(r.swept.get(k) for k in keys), []).append(r)
    head = [*keys, "runs", *[f"{label} (mean ± sd)" for _, label in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, group in sorted(groups.items(), key=by_values):
        cells = [fmt(v) for v in values] + [str(len(group))]
        for key, _ in COLUMNS:
            cells.append(mean_sd(g.final.get(key) for g in group))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DECODING_COLUMNS = [
    ("copy_rate", "copy rate"),
    ("novel_4gram", "novel 4-grams"),
    ("novel_8gram", "novel 8-grams"),
    ("longest_copy_tokens", "longest copy (tokens)"),
]


def by_setting(runs: list[RunRecord], swept: list[str]) -> dict[tuple, dict[str, dict[str, list[float]]]]:
    """{swept values but the seed: {decoding setting: {metric: values over seeds}}} of finished runs."""
    keys = [k for k in swept if k != "seed"]
    out: dict[tuple, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        if r.status != "finished":
            continue
        group = out.setdefault(tuple(r.swept.get(k) for k in keys), {})
        for s in settings_of([r]):
            for key, _ in DECODING_COLUMNS:
                value = r.final.get(f"gen/{s}/{key}")
                if value is not None:
                    group.setdefault(s, {}).setdefault(key, []).append(value)
    return out


def decoding_table(runs: list[RunRecord], swept: list[str]) -> str:
    """How much each decoding setting copies, per swept value (mean over seeds)."""
    keys = [k for k in swept if k != "seed"]
    head = [*keys, "decoding", *[label for _, label in DECODING_COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = by_setting(runs, swept)
    for values, settings in sorted(groups.items(), key=by_values):
        for s, metrics in sorted(settings.items(), key=lambda kv: np.mean(kv[1].get("copy_rate", [0]))):
            cells = [fmt(v) for v in values] + [s]
            cells += [fmt(float(np.mean(metrics[k]))) if k in metrics else "–" for k, _ in DECODING_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


GRAMMAR_SHARES = [
    ("novel_valid", "novel valid"),
    ("copied", "copied"),
    ("invalid", "invalid"),
    ("sentences", "sentences"),
]

GRAMMAR_NLL = [
    (VAL_LOSS, "val loss"),
    ("grammar/val_nll_model", "NLL model"),
    ("grammar/val_nll_true", "NLL grammar"),
]


def grammar_settings(runs: list[RunRecord]) -> list[str]:
    """Decoding settings whose sentences were scored against the grammar."""
    return scored_settings([r.final for r in runs])


def scored_settings(finals: list[dict]) -> list[str]:
    """The decoding settings with `grammar/<setting>/sentences` in any of `finals`."""
    return sorted({k.split("/")[1] for f in finals for k in f if k.startswith("grammar/") and k.endswith("/sentences")})


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def grammar_tables(runs: list[RunRecord], swept: list[str]) -> str:
    """The held-out NLL of the model and of the grammar, then each decoding setting's shares of copied,
    novel-valid and invalid sentences; per swept value, mean over seeds."""
    keys = [k for k in swept if k != "seed"]
    groups: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        if r.status == "finished":
            groups.setdefault(tuple(r.swept.get(k) for k in keys), []).append(r.final)
    ordered = sorted(groups.items(), key=by_values)
    head = [*keys, "runs", *[label for _, label in GRAMMAR_NLL], "model - grammar"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, finals in ordered:
        means = [_mean([f.get(k) for f in finals]) for k, _ in GRAMMAR_NLL]
        gap = means[1] - means[2] if None not in means[1:] else None
        lines.append("| " + " | ".join([*map(fmt, values), str(len(finals)), *map(fmt, means), fmt(gap)]) + " |")
    lines += ["", "Shares of the complete sentences of each decoding setting's samples:", ""]
    head = [*keys, "decoding", *[label for _, label in GRAMMAR_SHARES]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, finals in ordered:
        for s in scored_settings(finals):
            cells = [fmt(_mean([f.get(f"grammar/{s}/{k}") for f in finals])) for k, _ in GRAMMAR_SHARES]
            lines.append("| " + " | ".join([*map(fmt, values), s, *cells]) + " |")
    return "\n".join(lines)


def trends(runs: list[RunRecord]) -> dict[str, float | None]:
    done = [r for r in runs if r.status == "finished" and r.train_tokens]
    out = {}
    keys = TRENDS + [(f"grammar/{s}/novel_valid", f"novel-valid share ({s})") for s in grammar_settings(done)]
    for key, label in keys:
        pts = [(r.train_tokens, r.final[key]) for r in done if key in r.final]
        out[label] = spearman([p[0] for p in pts], [p[1] for p in pts])
    return out


def mean_by_size(done: list[RunRecord], key: str) -> tuple[list, list]:
    """(corpus sizes, the mean final value of `key` over the runs of each size)."""
    pts = [(r.train_tokens, r.final[key]) for r in done if r.final.get(key) is not None]
    sizes = sorted({p[0] for p in pts})
    return sizes, [float(np.mean([p[1] for p in pts if p[0] == z])) for z in sizes]
