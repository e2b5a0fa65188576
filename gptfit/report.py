"""`python -m gptfit.report <sweep dir> [--wandb]`: one table and a few figures for a whole sweep.

Reads every job directory of a Hydra multirun (`<sweep>/<job number>/`): its overrides
(`.hydra/overrides.yaml`), `summary.json` and `metrics.jsonl`. Writes into the sweep directory:
- `report.md`: one row per run (swept values, final losses, gap, memorization, copy rate per decoding
  setting), then the mean and spread over seeds of each setting, and Spearman rank correlations of the
  main figures with corpus size; failed and unfinished runs are listed as such;
- `report_gap.png`: gap, extraction rate and membership AUC against corpus size (log axis);
- `report_val_loss.png`: the validation loss curve of every run;
- `report_copy_rate.png`: copy rate against corpus size, one line per decoding setting;
- `report_decoding.png`: copy rate and novel 8-grams of each decoding setting, a bar per swept value;
- on the grammar (runs with `grammar/...` metrics): a table of the copied / novel-valid / invalid shares
  of each decoding setting's sentences and of the model's and the grammar's held-out NLL, and
  `report_grammar.png`: the novel-valid share against corpus size, one line per decoding setting,
  beside the two NLLs.
`--wandb` logs the same table and figures as a W&B run with job_type=report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import yaml

from gptfit.cli import fail
from gptfit.errors import UserError
from gptfit.run.tracking import read_jsonl

SIZE = "data.train_tokens"
COLUMNS = [("train/loss", "train loss"), ("val/loss", "val loss"), ("gap", "gap"),
           ("mem/extraction_rate_train", "extraction"), ("mem/exact_match_train", "exact match train"),
           ("mem/exact_match_val", "exact match val"), ("mem/mia_auc", "MIA AUC")]
TRENDS = [("gap", "gap"), ("mem/extraction_rate_train", "extraction rate"), ("val/loss", "final val loss")]


def read_job(job: Path) -> dict:
    overrides_file = job / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    swept = {}
    for item in overrides or []:
        key, _, value = item.lstrip("+~").partition("=")
        if not key.startswith(("experiment", "hydra")):
            swept[key] = yaml.safe_load(value)
    summary_file = job / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    status = summary.get("status", "not started")
    if status == "running":
        status = "unfinished"
    return {"job": job.name, "swept": swept, "status": status, "error": summary.get("error"),
            "final": summary.get("final", {}), "rows": read_jsonl(job / "metrics.jsonl"),
            "train_tokens": summary.get("config", {}).get("data", {}).get("train_tokens", swept.get(SIZE)),
            "group": summary.get("config", {}).get("logger", {}).get("group")}


def read_sweep(sweep: Path) -> list[dict]:
    if not sweep.is_dir():
        raise UserError(f"{sweep}: no such sweep directory")
    jobs = sorted((d for d in sweep.iterdir() if d.is_dir() and (d / ".hydra").is_dir()),
                  key=lambda d: int(d.name) if d.name.isdigit() else 10**9)
    if not jobs:
        raise UserError(f"{sweep}: no job directories (with .hydra/) inside; give the folder of a multirun")
    return [read_job(j) for j in jobs]


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


def settings_of(runs: list[dict]) -> list[str]:
    names = {k.split("/")[1] for r in runs for k in r["final"] if k.startswith("gen/") and k.endswith("/copy_rate")}
    return sorted(names)


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def varying(runs: list[dict]) -> tuple[list[str], dict]:
    """(override keys whose value differs between runs, {key: value} of the overrides all runs share)."""
    keys = sorted({k for r in runs for k in r["swept"]})
    values = {k: {json.dumps(r["swept"].get(k), default=str) for r in runs} for k in keys}
    swept = [k for k in keys if len(values[k]) > 1]
    fixed = {k: runs[0]["swept"].get(k) for k in keys if len(values[k]) == 1}
    return swept, fixed


def table(runs: list[dict], swept: list[str]) -> str:
    settings = settings_of(runs)
    head = ["job", *swept, "status", *[label for _, label in COLUMNS], *[f"copy {s}" for s in settings]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        f = r["final"] if r["status"] == "finished" else {}
        cells = [r["job"], *[fmt(r["swept"].get(k)) for k in swept],
                 r["status"] + (f" ({r['error']})" if r["error"] else "")]
        cells += [fmt(f.get(key)) for key, _ in COLUMNS]
        cells += [fmt(f.get(f"gen/{s}/copy_rate")) for s in settings]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_values(item: tuple) -> list:
    """Sort key of a (swept values, ...) pair: numbers in numeric order (1024 before 16384), then text."""
    return [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in item[0]]


def seed_table(runs: list[dict], swept: list[str]) -> str:
    keys = [k for k in swept if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["status"] == "finished":
            groups.setdefault(tuple(r["swept"].get(k) for k in keys), []).append(r)
    head = [*keys, "runs", *[f"{label} (mean ± sd)" for _, label in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, group in sorted(groups.items(), key=by_values):
        cells = [fmt(v) for v in values] + [str(len(group))]
        for key, _ in COLUMNS:
            xs = [g["final"][key] for g in group if key in g["final"]]
            if not xs:
                cells.append("–")
            else:
                sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
                cells.append(f"{statistics.mean(xs):.3f} ± {sd:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DECODING_COLUMNS = [("copy_rate", "copy rate"), ("novel_4gram", "novel 4-grams"), ("novel_8gram", "novel 8-grams"),
                    ("longest_copy_tokens", "longest copy (tokens)")]


def by_setting(runs: list[dict], swept: list[str]) -> dict[tuple, dict[str, dict[str, list[float]]]]:
    """{swept values but the seed: {decoding setting: {metric: values over seeds}}} of finished runs."""
    keys = [k for k in swept if k != "seed"]
    out: dict[tuple, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        if r["status"] != "finished":
            continue
        group = out.setdefault(tuple(r["swept"].get(k) for k in keys), {})
        for s in settings_of([r]):
            for key, _ in DECODING_COLUMNS:
                value = r["final"].get(f"gen/{s}/{key}")
                if value is not None:
                    group.setdefault(s, {}).setdefault(key, []).append(value)
    return out


def decoding_table(runs: list[dict], swept: list[str]) -> str:
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


GRAMMAR_SHARES = [("novel_valid", "novel valid"), ("copied", "copied"), ("invalid", "invalid"),
                  ("sentences", "sentences")]
GRAMMAR_NLL = [("val/loss", "val loss"), ("grammar/val_nll_model", "NLL model"),
               ("grammar/val_nll_true", "NLL grammar")]


def grammar_settings(runs: list[dict]) -> list[str]:
    """Decoding settings whose sentences were scored against the grammar."""
    return sorted({k.split("/")[1] for r in runs for k in r["final"]
                   if k.startswith("grammar/") and k.endswith("/sentences")})


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def grammar_tables(runs: list[dict], swept: list[str]) -> str:
    """The held-out NLL of the model and of the grammar, then each decoding setting's shares of copied,
    novel-valid and invalid sentences; per swept value, mean over seeds."""
    keys = [k for k in swept if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["status"] == "finished":
            groups.setdefault(tuple(r["swept"].get(k) for k in keys), []).append(r["final"])
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
        for s in grammar_settings([{"final": f} for f in finals]):
            cells = [fmt(_mean([f.get(f"grammar/{s}/{k}") for f in finals])) for k, _ in GRAMMAR_SHARES]
            lines.append("| " + " | ".join([*map(fmt, values), s, *cells]) + " |")
    return "\n".join(lines)


def trends(runs: list[dict]) -> dict[str, float | None]:
    done = [r for r in runs if r["status"] == "finished" and r["train_tokens"]]
    out = {}
    keys = TRENDS + [(f"grammar/{s}/novel_valid", f"novel-valid share ({s})") for s in grammar_settings(done)]
    for key, label in keys:
        pts = [(r["train_tokens"], r["final"][key]) for r in done if key in r["final"]]
        out[label] = spearman([p[0] for p in pts], [p[1] for p in pts])
    return out


def mean_by_size(done: list[dict], key: str) -> tuple[list, list]:
    """(corpus sizes, the mean final value of `key` over the runs of each size)."""
    pts = [(r["train_tokens"], r["final"][key]) for r in done if r["final"].get(key) is not None]
    sizes = sorted({p[0] for p in pts})
    return sizes, [float(np.mean([p[1] for p in pts if p[0] == z])) for z in sizes]


def grammar_figure(done: list[dict]):
    """Novel-valid share against corpus size per decoding setting, and the model's vs the grammar's NLL
    (a matplotlib figure; None without grammar metrics)."""
    import matplotlib.pyplot as plt

    settings = grammar_settings(done)
    if not settings:
        return None

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=100)
    for s in settings:
        axes[0].plot(*mean_by_size(done, f"grammar/{s}/novel_valid"), marker="o", label=s)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("share of sentences: novel and valid")
    axes[0].legend(fontsize=7)
    axes[1].plot(*mean_by_size(done, "grammar/val_nll_model"), marker="o", color="tab:red", label="model")
    axes[1].plot(*mean_by_size(done, "grammar/val_nll_true"), marker="o", color="black", linestyle="--", label="grammar (true)")
    axes[1].set_ylabel("held-out NLL per sentence (nats)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
    return fig


def figures(runs: list[dict], sweep: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((r for r in runs if r["status"] == "finished" and r["train_tokens"]), key=lambda r: r["train_tokens"])
    paths = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        paths.append(sweep / name)
        fig.savefig(paths[-1])
        plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    for ax, (key, label) in zip(axes, [("gap", "generalization gap (nats)"),
                                       ("mem/extraction_rate_train", "extraction rate (train)"),
                                       ("mem/mia_auc", "membership-inference AUC")]):
        pts = [(r["train_tokens"], r["final"][key]) for r in done if key in r["final"]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:red")
        ax.plot(*mean_by_size(done, key), color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("training tokens")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    save(fig, "report_gap.png")

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(done):
        rows = [x for x in r["rows"] if "val/loss" in x]
        ax.plot([x["tokens_seen"] for x in rows], [x["val/loss"] for x in rows],
                color=cmap(i / max(len(done) - 1, 1)), label=f"{r['train_tokens']} tokens (job {r['job']})")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, "report_val_loss.png")

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for s in settings_of(done):
        ax.plot(*mean_by_size(done, f"gen/{s}/copy_rate"), marker="o", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("copy rate (samples with a 16-token training span)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, "report_copy_rate.png")

    # Each decoding setting side by side: copy rate and held-out-like novelty, one bar per corpus size.
    swept, _ = varying(done)
    groups = by_setting(done, swept)
    settings = sorted({s for g in groups.values() for s in g},
                      key=lambda s: -np.mean([np.mean(g[s]["copy_rate"]) for g in groups.values() if s in g]))
    if settings:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
        width = 0.8 / len(groups)
        for i, (values, g) in enumerate(sorted(groups.items(), key=by_values)):
            label = ", ".join(f"{k}={fmt(v)}" for k, v in zip([k for k in swept if k != "seed"], values)) or "all runs"
            x = np.arange(len(settings)) + i * width
            for ax, key in zip(axes, ("copy_rate", "novel_8gram")):
                ax.bar(x, [np.mean(g[s][key]) if s in g and key in g[s] else np.nan for s in settings], width,
                       label=label)
        for ax, title in zip(axes, ("copy rate (samples with a training span)", "novel 8-grams of the samples")):
            ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings, rotation=20)
            ax.set_ylim(0, 1)
            ax.set_title(title)
            ax.grid(alpha=0.3, axis="y")
        axes[0].legend(fontsize=7)
        save(fig, "report_decoding.png")

    grammar = grammar_figure(done)
    if grammar is not None:
        save(grammar, "report_grammar.png")
    return paths


def report(sweep: Path, to_wandb: bool = False) -> Path:
    runs = read_sweep(sweep)
    swept, fixed = varying(runs)
    body = table(runs, swept)
    corr = trends(runs)
    grammar = grammar_tables(runs, swept) if grammar_settings(runs) else None
    lines = [f"# Sweep report: {sweep}", ""]
    if fixed:
        lines += ["Overrides shared by every run: " + " ".join(f"`{k}={fmt(v)}`" for k, v in fixed.items()), ""]
    lines += [body, ""]
    if any("seed" == k for k in swept) or len(runs) > 1:
        lines += ["## Mean and spread over seeds", "", seed_table(runs, swept), ""]
    if settings_of(runs):
        lines += ["## Decoding settings (mean over seeds; least copying first)", "", decoding_table(runs, swept), ""]
    if grammar is not None:
        lines += ["## Grammar: held-out NLL per sentence (nats) and the sentences of the samples (mean over seeds)",
                  "", grammar, ""]
    lines += ["## Trends with corpus size (Spearman rank correlation)", ""]
    lines += [f"- {label}: {fmt(value)}" for label, value in corr.items()]
    not_done = [r for r in runs if r["status"] != "finished"]
    if not_done:
        lines += ["", "## Runs that did not finish", ""]
        lines += [f"- job {r['job']}: {r['status']}" + (f" ({r['error']})" if r["error"] else "") for r in not_done]
    paths = figures(runs, sweep)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in paths]]
    out = sweep / "report.md"
    out.write_text("\n".join(lines) + "\n")
    print(body)
    if grammar is not None:
        print(grammar)
    for label, value in corr.items():
        print(f"spearman({label}, corpus size) = {fmt(value)}")
    for r in not_done:
        print(f"job {r['job']}: {r['status']}")
    print(f"report: {out}")
    if to_wandb:
        log_to_wandb(sweep, runs, paths)
    return out


def log_to_wandb(sweep: Path, runs: list[dict], paths: list[Path]) -> None:
    import wandb

    from gptfit.run.tracking import has_wandb_key

    group = next((r["group"] for r in runs if r["group"]), None)  # the sweep's own W&B group
    run = wandb.init(project="gptfit", job_type="report", name=f"report-{sweep.name}", group=group,
                     dir=str(sweep), mode="online" if has_wandb_key() else "offline")
    columns = ["job", "status", "train_tokens", *[k for k, _ in COLUMNS]]
    t = wandb.Table(columns=columns)
    for r in runs:
        t.add_data(r["job"], r["status"], r["train_tokens"], *[r["final"].get(k) for k, _ in COLUMNS])
    run.log({"sweep": t, **{p.stem: wandb.Image(str(p)) for p in paths}})
    run.finish()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gptfit.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="a multirun directory, e.g. outputs/multiruns/<stamp>")
    ap.add_argument("--wandb", action="store_true", help="also log the report as a W&B run (job_type=report)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report(Path(args.sweep), args.wandb)
    except UserError as e:
        fail([str(e)])


if __name__ == "__main__":
    main()
