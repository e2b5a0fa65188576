"""The capacity table of a study (gptfit.report on data=uniform runs, such as +experiment=capacity; Morris et al.
2025): for each model and dataset size the bits it memorized (capacity/bits_total at its last evaluation, seeds
pooled), and for each model its capacity: the most bits it held at any dataset size, its plateau. Bits per
parameter is fitted as the slope of the plateaus against the parameters, through the origin, with a 95% t
interval over the models; the slope of a line with an intercept is given beside it.

Morris et al.'s membership law: the loss score's AUC of each run against its model's capacity over the dataset's
bits, with their sigmoid AUC = 1/2 (1 + c1 sigmoid(c2 (capacity / |D| + c3))) fitted to every model at once
(`membership_law`); the models collapse onto one curve when the pooled fit leaves little more error than a fit
per model.

Every figure comes from the runs' summaries (`final`, the parameter counts, `saturated_at_step`); `per_run`
holds them one row per run, and the tables, their CSV and the figure are drawn from that frame alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from gptfit.files import write_text_atomic
from gptfit.plots.capacity import capacity_figure, membership_law_figure
from gptfit.record import RunRecord
from gptfit.show.numbers import mean_sd

PAPER_BITS_PER_PARAM = 3.6  # Morris et al. 2025: GPT-style models of 500K to 1.5B parameters, fp32 a little more


@dataclass
class Fit:
    """Bits per parameter from the models' plateaus: the slope through the origin with its 95% interval, and the
    slope of a line with an intercept."""

    slope: float
    lo: float
    hi: float
    free_slope: float | None
    free_intercept: float | None
    models: int


def record(run: RunRecord) -> dict | None:
    """A finished data=uniform run's row; None for any other run."""
    summary, config, final = run.summary, run.config, run.final
    if not run.finished or config.data.source != "uniform":
        return None
    if "capacity/bits_total" not in final:
        return None
    uniform, model = config.data.uniform, config.model
    information = (uniform.length - 1) * math.log2(uniform.vocab)  # bits a sequence holds
    return {
        "job": run.job,
        "model": f"{model.n_layer} x {model.n_embd}",
        "params": summary["capacity/params"],
        "params_non_embedding": summary["capacity/params_non_embedding"],
        "sequences": uniform.sequences,
        "dataset_bits": uniform.sequences * information,
        "bits": final["capacity/bits_total"],
        "seed": config.seed,
        "step": final.get("step"),
        "epochs": final.get("epoch"),
        "saturated": summary.get("saturated_at_step") is not None,
        "wall_time_s": run.wall_time_s,
        **{f"mia_auc{b}": final.get(f"mia/loss/auc{b}") for b in ("", "_lo", "_hi")},
    }


def per_run(runs: list[RunRecord]) -> pd.DataFrame | None:
    records = [r for r in map(record, runs) if r is not None]
    if not records:
        return None
    return pd.DataFrame(records).sort_values(["params", "sequences", "seed"], kind="stable")


def plateaus(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model: its parameters and its plateau, the largest mean (over seeds) of the bits it memorized
    at any dataset size, with the size it came at."""
    cells = frame.groupby(["params", "params_non_embedding", "model", "sequences"], as_index=False)["bits"].mean()
    best = cells.loc[cells.groupby("params")["bits"].idxmax()]
    return best.rename(columns={"bits": "plateau", "sequences": "at_sequences"}).reset_index(drop=True)


def fit(models: pd.DataFrame) -> Fit | None:
    """Bits per parameter over the models' plateaus; None with fewer than two models."""
    x, y = models["params"].to_numpy(float), models["plateau"].to_numpy(float)
    n = len(x)
    if n < 2:
        return None
    slope = float((x * y).sum() / (x * x).sum())
    # The slope's standard error through the origin: the residuals' variance (n - 1 degrees of freedom) / sum x^2.
    se = math.sqrt(float(((y - slope * x) ** 2).sum()) / (n - 1) / float((x * x).sum()))
    half = float(stats.t.ppf(0.975, n - 1)) * se
    free = stats.linregress(x, y) if n >= 3 else None
    return Fit(
        slope,
        slope - half,
        slope + half,
        float(free.slope) if free is not None else None,
        float(free.intercept) if free is not None else None,
        n,
    )


def cell_table(frame: pd.DataFrame) -> str:
    """One row per model and dataset size."""
    head = (
        "| model | parameters | sequences | dataset bits | x capacity at 3.6 | memorized bits | share of the set "
        "| bits / parameter | seeds | steps | epochs | saturated | wall time (s) |"
    )
    lines = [head, "|" + "---|" * 13]
    for (params, sequences), group in frame.groupby(["params", "sequences"], sort=True):
        row = group.iloc[0]
        bits = group["bits"].astype(float)
        saturated = int(group["saturated"].sum())
        lines.append(
            "| "
            + " | ".join(
                [
                    row["model"],
                    f"{params:,}",
                    f"{sequences:,}",
                    f"{row['dataset_bits']:,.0f}",
                    f"{row['dataset_bits'] / (PAPER_BITS_PER_PARAM * params):.2f}",
                    mean_sd(bits, 0),
                    mean_sd(bits / row["dataset_bits"]),
                    mean_sd(bits / params, 2),
                    str(len(group)),
                    mean_sd(group["step"].astype(float), 0),
                    mean_sd(group["epochs"].astype(float), 0),
                    f"{saturated}/{len(group)}",
                    mean_sd(group["wall_time_s"].astype(float), 0),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def model_table(models: pd.DataFrame, result: Fit | None) -> str:
    lines = [
        "| model | parameters | non-embedding | plateau (bits) | at sequences | bits / parameter "
        "| bits / non-embedding parameter |",
        "|" + "---|" * 7,
    ]
    for _, m in models.iterrows():
        lines.append(
            f"| {m['model']} | {m['params']:,} | {m['params_non_embedding']:,} | {m['plateau']:,.0f} "
            f"| {m['at_sequences']:,} | {m['plateau'] / m['params']:.2f} "
            f"| {m['plateau'] / m['params_non_embedding']:.2f} |"
        )
    if result is not None:
        lines += ["", fit_line(result)]
    return "\n".join(lines)


def fit_line(result: Fit) -> str:
    text = (
        f"Bits per parameter (slope of the plateaus through the origin, {result.models} models): "
        f"**{result.slope:.2f}** [95%: {result.lo:.2f}, {result.hi:.2f}]; Morris et al. 2025: "
        f"{PAPER_BITS_PER_PARAM}."
    )
    if result.free_slope is not None:
        text += f" With an intercept: {result.free_slope:.2f} bits a parameter + {result.free_intercept:,.0f} bits."
    return text


def capacity_report(runs: list[RunRecord], out: Path) -> tuple[str, list[Path], float | None] | None:
    """The tables (returned, and written to `out`/capacity.md), the per-run figures behind them (capacity.csv),
    the figure (capacity.png) and the fitted bits per parameter (None below two models); None without
    data=uniform runs."""
    frame = per_run(runs)
    if frame is None:
        return None
    models = plateaus(frame)
    result = fit(models)
    text = cell_table(frame) + "\n\n" + model_table(models, result)
    law = membership_law(frame, models)
    figures = [capacity_figure(frame, models, result.slope if result else None, PAPER_BITS_PER_PARAM, out)]
    if law is not None:
        text += "\n\n" + law_text(law)
        path = out / "capacity_membership.png"
        figures.append(membership_law_figure(law["points"], law["pooled"], sigmoid_law, path))
    write_text_atomic(out / "capacity.md", "# Capacity\n\n" + text + "\n")
    write_text_atomic(out / "capacity.csv", frame.to_csv(index=False))
    return text, [out / "capacity.md", out / "capacity.csv", *figures], result.slope if result else None


def sigmoid_law(x: np.ndarray, c1: float, c2: float, c3: float) -> np.ndarray:
    """Morris et al.'s membership law: 1/2 (1 + c1 sigmoid(c2 (x + c3))), x = capacity / dataset size."""
    return 0.5 * (1 + c1 / (1 + np.exp(-c2 * (x + c3))))


def _fit_law(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(c1, c2, c3) and the RMS error of the law fitted to (x, y); None where it does not converge."""
    try:
        coef, _ = optimize.curve_fit(sigmoid_law, x, y, p0=(1.0, 4.0, -0.5), maxfev=20000)
    except (RuntimeError, TypeError, ValueError):  # too few points, or no convergence
        return None
    return coef, float(np.sqrt(np.mean((sigmoid_law(x, *coef) - y) ** 2)))


def membership_law(frame: pd.DataFrame, models: pd.DataFrame) -> dict | None:
    """The membership law over every run with a loss AUC: x = its model's plateau over the dataset's bits.
    {"points": frame with x, "pooled": (coef, rms), "per_model": {model: rms of its own fit}}; None without
    two models with AUCs."""
    runs = frame.dropna(subset=["mia_auc"]).merge(models[["params", "plateau"]], on="params")
    if runs["params"].nunique() < 2:
        return None
    runs = runs.assign(x=runs["plateau"] / runs["dataset_bits"])
    pooled = _fit_law(runs["x"].to_numpy(float), runs["mia_auc"].to_numpy(float))
    own = {}
    for model, group in runs.groupby("model", sort=False):
        fitted = _fit_law(group["x"].to_numpy(float), group["mia_auc"].to_numpy(float))
        own[model] = fitted[1] if fitted else None
    return {"points": runs, "pooled": pooled, "per_model": own}


def law_text(law: dict) -> str:
    """The fitted law, and how far each model's runs sit from the pooled curve against their own fit."""
    if law["pooled"] is None:
        return "The membership law did not converge on these runs."
    (c1, c2, c3), rms = law["pooled"]
    lines = [
        f"Membership law (Morris et al.), fitted to {len(law['points'])} runs of {len(law['per_model'])} models: "
        f"AUC = 1/2 (1 + {c1:.3f} sigmoid({c2:.3f} (capacity / dataset bits + {c3:.3f}))), RMS error {rms:.3f}.",
        "",
        "| model | runs | RMS error from the pooled curve | RMS error of its own fit |",
        "|---|---|---|---|",
    ]
    for model, group in law["points"].groupby("model", sort=False):
        error = float(np.sqrt(np.mean((sigmoid_law(group["x"].to_numpy(float), c1, c2, c3) - group["mia_auc"]) ** 2)))
        own = law["per_model"].get(model)
        lines.append(f"| {model} | {len(group)} | {error:.3f} | {'–' if own is None else f'{own:.3f}'} |")
    return "\n".join(lines)
