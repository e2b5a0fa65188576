"""The body of `python -m gptfit.mia <sweep dir>`: LiRA, RMIA and counterfactual memorization over a sweep of
shadow models (runs with data.subset, e.g. +experiment=shadow_models).

Reads each finished run's `subset.json` and the last evaluation of its `sequences.parquet`, whose rows
hold every candidate. Each model in turn is the target, attacked by LiRA fitted on the other M - 1, by
RMIA with the other M - 1 as references (its population: the target's non-member candidates, since the
tables hold no sequence outside every model; gptfit/metrics/shadow.py) and by the single-model scores of
its own table; the figures are per target and pooled over the targets.
Writes `mia_report.md`, `mia_lira_roc.png` and `mia_counterfactual.png` into the sweep directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from scipy.stats import spearmanr

from gptfit.errors import UserError
from gptfit.files import SUBSET, TOKENIZER
from gptfit.metrics import membership
from gptfit.metrics.shadow import counterfactual, lira, logit_confidence, rmia, tuned_a
from gptfit.plots.membership import counterfactual_figure, roc_figure, save
from gptfit.record import RunRecord
from gptfit.show.sweep import fmt, read_sweep, with_interval

COLUMNS = [
    "candidate",
    "split",
    "doc_id",
    "tokens",
    "loss",
    "exact_match",
    "token_exposures",
    *(f"mia_{name}" for name in membership.MODEL_SCORES),
]
# The attacks compared on every target: LiRA's and RMIA's two tests, then the single-model scores.
ATTACKS = ("lira_online", "lira_offline", "rmia_online", "rmia_offline", *membership.MODEL_SCORES)
TOP = 10  # the most memorized candidates shown with their text


@dataclass
class Shadows:
    """M models' view of the same N candidates (rows: models in job order; columns: candidates)."""

    jobs: list[str]
    members: np.ndarray  # [M, N] bool
    scores: dict[str, np.ndarray]  # `mia_<score>` -> [M, N]
    exact_match: np.ndarray  # [M, N] per-token accuracy
    loss: np.ndarray  # [M, N] mean token loss
    token_exposures: np.ndarray  # [M, N] (0 when out)
    tokens: np.ndarray  # [N, L]
    documents: np.ndarray  # [N] pool document of each candidate
    tokenizer_dir: Path


def _final_candidates(run: RunRecord):
    last = run.last_table(columns=COLUMNS)
    return last.filter(pc.greater_equal(last["candidate"], 0)).sort_by("candidate")


def read_shadows(sweep: Path) -> Shadows:
    """The sweep's finished shadow models; one line for a sweep that is not one."""
    runs = read_sweep(sweep)
    done = [r for r in runs if r.finished]
    dirs = [r.dir for r in done]
    for d in dirs:
        if not (d / SUBSET).exists():
            raise UserError(
                f"{d}: no subset.json, so not a shadow model; train the sweep with data.subset "
                "(python -m gptfit.train +experiment=shadow_models)"
            )
    if len(dirs) < 2:
        raise UserError(
            f"{sweep}: {len(dirs)} finished shadow model(s); LiRA fits each target's Gaussians on the "
            "other models, so it needs at least 2 (shadow_models trains 16: data.subset.seed=range(0,16))"
        )
    tables = [_final_candidates(r) for r in done]
    tokens = np.stack(tables[0]["tokens"].to_numpy(zero_copy_only=False))
    for d, t in zip(dirs, tables):
        if t.num_rows != len(tokens) or not np.array_equal(
            np.stack(t["tokens"].to_numpy(zero_copy_only=False)), tokens
        ):
            raise UserError(
                f"{d}: its candidates differ from those of {dirs[0]}; every shadow model of a sweep must "
                "share data.train_tokens, data.split_seed and the sequence length"
            )
    stack = lambda column: np.stack([np.asarray(t[column], dtype=np.float64) for t in tables])  # noqa: E731
    return Shadows(
        [d.name for d in dirs],
        np.stack([np.asarray(pc.equal(t["split"], "train")) for t in tables]),
        {f"mia_{n}": stack(f"mia_{n}") for n in membership.MODEL_SCORES},
        stack("exact_match"),
        stack("loss"),
        stack("token_exposures"),
        tokens,
        np.asarray(tables[0]["doc_id"]),
        dirs[0] / TOKENIZER,
    )


def geometric_mean_p(shadows: Shadows) -> np.ndarray:
    """[M, N] each model's geometric-mean token probability of each candidate, exp(-mean token loss): RMIA's p."""
    return np.exp(-shadows.loss)


def offline_as(shadows: Shadows) -> np.ndarray:
    """[M] RMIA's offline a for each target, picked by attacking another model (`tuned_a`)."""
    p = geometric_mean_p(shadows)
    return np.array([tuned_a(p, shadows.members, target) for target in range(len(p))])


def attack_scores(shadows: Shadows, a: np.ndarray) -> dict[str, np.ndarray]:
    """{attack: [M, N]} every attack's score of every candidate, each model in turn the target; `a`: [M] the
    offline a of RMIA's test of each target."""
    phi = logit_confidence(shadows.scores["mia_loss"])
    tests = [lira(phi, shadows.members, target) for target in range(len(phi))]
    p = geometric_mean_p(shadows)
    relative = [rmia(p, shadows.members, target, a[target]) for target in range(len(p))]
    out = {
        "lira_online": np.stack([t["online"] for t in tests]),
        "lira_offline": np.stack([t["offline"] for t in tests]),
        "rmia_online": np.stack([t["online"] for t in relative]),
        "rmia_offline": np.stack([t["offline"] for t in relative]),
    }
    out.update({name: shadows.scores[f"mia_{name}"] for name in membership.MODEL_SCORES})
    return out


def per_target(shadows: Shadows, attacks: dict[str, np.ndarray]) -> dict[str, list[dict]]:
    """{attack: [separation of each target]}."""
    return {
        name: [membership.separation(shadows.members[m], scores[m]) for m in range(len(scores))]
        for name, scores in attacks.items()
    }


def pooled(shadows: Shadows, attacks: dict[str, np.ndarray], resamples: int) -> dict[str, dict]:
    """{attack: figures over every target's candidates together, with `_lo`/`_hi` from a bootstrap over
    the pool's documents (a document's candidates, in every target, are drawn together)."""
    members = shadows.members.ravel()
    documents = np.tile(shadows.documents, len(shadows.members))
    out = {}
    for name, scores in attacks.items():
        figures = membership.separation(members, scores.ravel())
        bounds = membership.bootstrap(members, scores.ravel(), documents, resamples, seed=0)
        out[name] = {
            **figures,
            **{f"{k}_lo": bounds.get(k, (None, None))[0] for k in figures},
            **{f"{k}_hi": bounds.get(k, (None, None))[1] for k in figures},
        }
    return out


def memorization(shadows: Shadows) -> dict[str, np.ndarray]:
    """Counterfactual memorization of every candidate, and its mean token exposures when in."""
    with np.errstate(invalid="ignore"):
        exposures = (shadows.token_exposures * shadows.members).sum(0) / shadows.members.sum(0)
    return {
        "accuracy": counterfactual(shadows.exact_match, shadows.members),
        "loss": -counterfactual(shadows.loss, shadows.members),
        "exposures": exposures,
    }


def attack_tables(shadows: Shadows, targets: dict[str, list[dict]], pool: dict[str, dict], a: np.ndarray) -> list[str]:
    lines = [
        "## The attacks on the same targets",
        "",
        f"{len(shadows.jobs)} models, {shadows.members.shape[1]} candidates; each model in turn is the target, "
        "LiRA fitted on the others and RMIA (gamma = 1) referenced to them. RMIA's population is the target's "
        "own non-member candidates, each with p(z) from the models that did not train on it: every candidate "
        "is a member of about half the models, and the tables hold no sequence outside all of them. RMIA "
        f"offline's a, picked per target by attacking another model: {_spread(a, '.2f')}. Pooled over all targets "
        "(95% intervals from a bootstrap over the pool's documents):",
        "",
        "| attack | AUC | TPR at 1% FPR | TPR at 0.1% FPR |",
        "|---|---|---|---|",
    ]
    for name in ATTACKS:
        lines.append(
            f"| {name} | "
            + " | ".join(with_interval(pool[name], k) for k in ("auc", "tpr@1%fpr", "tpr@0.1%fpr"))
            + " |"
        )
    lines += [
        "",
        "Per target (mean and range over the targets; TPR at 1% FPR where a target has 1,000 non-members):",
        "",
        "| attack | AUC | TPR at 1% FPR |",
        "|---|---|---|",
    ]
    for name in ATTACKS:
        cells = []
        for key in ("auc", "tpr@1%fpr"):
            values = [t[key] for t in targets[name] if t[key] is not None]
            cells.append(_spread(values, ".3f") if values else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _spread(values, form: str = ".1f") -> str:
    """The mean of `values` and their range."""
    return f"{np.mean(values):{form}} ({min(values):{form}} to {max(values):{form}})"


def memorization_section(shadows: Shadows, mem: dict[str, np.ndarray]) -> list[str]:
    from transformers import AutoTokenizer  # here: only the report's text needs it

    tokenizer = AutoTokenizer.from_pretrained(str(shadows.tokenizer_dir))
    known = np.isfinite(mem["accuracy"])
    acc, loss, exposures = mem["accuracy"][known], mem["loss"][known], mem["exposures"][known]
    rho = spearmanr(acc, exposures).statistic if len(acc) > 2 else None
    lines = [
        "## Counterfactual memorization (Zhang et al. 2021)",
        "",
        f"Over the {int(known.sum())} candidates with models on both sides: per-token accuracy in minus out, "
        f"mean {acc.mean():.3f}, median {np.median(acc):.3f}, 99th percentile {np.percentile(acc, 99):.3f}, "
        f"max {acc.max():.3f}; loss out minus in, mean {loss.mean():.3f}, max {loss.max():.3f}.",
        f"Spearman correlation with the mean token exposures when in: {fmt(float(rho) if rho is not None else None)}.",
        "",
        f"The {TOP} most memorized candidates:",
        "",
        "| candidate | accuracy in - out | loss out - in | exposures | text |",
        "|---|---|---|---|---|",
    ]
    index = np.flatnonzero(known)
    for i in index[np.argsort(-acc)[:TOP]]:
        text = tokenizer.decode(shadows.tokens[i].tolist()).replace("|", "\\|").replace("\n", "⏎ ")
        lines.append(f"| {i} | {mem['accuracy'][i]:.3f} | {mem['loss'][i]:.3f} | {mem['exposures'][i]:.1f} | {text} |")
    return lines


def shadow_report(sweep: Path, resamples: int = 200) -> tuple[Path, dict]:
    """Write the report and its figures into `sweep`; return its path and the pooled figures."""
    shadows = read_shadows(sweep)
    a = offline_as(shadows)
    attacks = attack_scores(shadows, a)
    targets, pool = per_target(shadows, attacks), pooled(shadows, attacks, resamples)
    mem = memorization(shadows)
    members = shadows.members.ravel()
    curves = {name: membership.roc(members, attacks[name].ravel(), None) for name in ATTACKS}
    roc = save(
        roc_figure(curves, int((~members).sum()), f"{len(shadows.jobs)} targets, pooled"), sweep / "mia_lira_roc.png"
    )
    known = np.isfinite(mem["accuracy"])
    cf = save(
        counterfactual_figure(mem["accuracy"][known], mem["loss"][known], mem["exposures"][known]),
        sweep / "mia_counterfactual.png",
    )
    lines = [
        f"# Membership inference with shadow models: {sweep}",
        "",
        *attack_tables(shadows, targets, pool, a),
        "",
        *memorization_section(shadows, mem),
        "",
        f"![ROC]({roc.name})",
        f"![counterfactual memorization]({cf.name})",
    ]
    out = sweep / "mia_report.md"
    out.write_text("\n".join(lines) + "\n")
    record = {"models": shadows.jobs, "pooled": pool, "rmia_offline_a": a.tolist()}
    (sweep / "mia_report.json").write_text(json.dumps(record, indent=2) + "\n")
    return out, pool
