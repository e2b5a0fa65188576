"""Shadow models as a specification: a subset run trains on exactly its members, every run scores every
candidate, LiRA, RMIA and counterfactual memorization recover what was planted in synthetic data, and a real
4-model sweep goes through `python -m gptfit.mia` with every figure in range."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gptfit.data.corpus import load_corpus
from gptfit.metrics.shadow import A_GRID, OFFLINE_A, counterfactual, lira, logit_confidence, rmia, tuned_a
from gptfit.show.shadow import ATTACKS
from tests.conftest import TINY, error_lines, run_cli
from tests.roc import roc_auc

SUBSET = [*TINY, "+data/subset=half", "data.train_tokens=2048"]  # 128 candidates of 16 tokens


def test_a_subset_run_trains_on_exactly_its_members_each_a_document(make_config):
    corpus = load_corpus(make_config(SUBSET).data, sequence_length=16)
    subset = corpus.subset
    assert subset.tokens.shape == (128, 16) and subset.members.sum() == 64
    expected = np.concatenate([np.append(row, corpus.eot_id) for row in subset.tokens[subset.members]])
    assert np.array_equal(corpus.train, expected)  # the members, each followed by end-of-text, nothing else
    for i in np.flatnonzero(subset.members):
        assert np.array_equal(corpus.train[subset.positions[i] : subset.positions[i] + 16], subset.tokens[i])
    assert (subset.positions[~subset.members] == -1).all()
    other = load_corpus(make_config([*SUBSET, "data.subset.seed=1"]).data, sequence_length=16).subset
    assert np.array_equal(other.tokens, subset.tokens)  # the same candidates for every seed
    assert 20 < (other.members != subset.members).sum() < 108  # and another half of them


@pytest.mark.slow
def test_a_subset_run_records_its_members_and_scores_every_candidate(make_config, tmp_path):
    from gptfit.run.training import train

    train(make_config([*SUBSET, "train.max_steps=10"], tmp_path))
    record = json.loads((tmp_path / "subset.json").read_text())
    assert record["candidates"] == 128 and len(record["members"]) == 64 and record["sequence_tokens"] == 16
    table = pd.read_parquet(tmp_path / "sequences.parquet")
    last = table[table.step == table.step.max()].sort_values("candidate")
    assert last.candidate.tolist() == list(range(128))  # all of them, although eval.sequences=16
    assert set(last[last.split == "train"].candidate) == set(record["members"])
    assert last[last.split == "train"].token_exposures.mean() > 1  # seen: 80 windows of 48 tokens, 1,088 in all
    assert (last[last.split == "val"].token_exposures == 0).all()  # never seen


def test_lira_calibrates_each_candidates_difficulty_and_beats_the_raw_score():
    # phi = difficulty of the candidate + 0.5 when a member + noise: the raw score is swamped by
    # difficulty, while LiRA, which knows each candidate's out mean, is not.
    rng = np.random.default_rng(0)
    models, n = 16, 2000
    members = rng.random((models, n)) < 0.5
    phi = rng.normal(0, 3, n)[None, :] + 0.5 * members + rng.normal(0, 0.3, (models, n))
    raw = np.mean([roc_auc(members[m], phi[m]) for m in range(models)])
    online = np.mean([roc_auc(members[m], lira(phi, members, m)["online"]) for m in range(models)])
    offline = np.mean([roc_auc(members[m], lira(phi, members, m)["offline"]) for m in range(models)])
    assert raw < 0.6 and online > 0.85 and offline > 0.8
    # With shared variances, the offline test ranks exactly as phi minus the out mean.
    scores, others = lira(phi, members, 0)["offline"], np.arange(models) != 0
    mu_out = np.array([phi[others & ~members[:, x], x].mean() for x in range(n)])
    assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(phi[0] - mu_out, kind="stable"))


def _planted(seed: int, models: int = 16, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """([M, N] p, [M, N] members): log p = the candidate's difficulty + 1 when a member + noise, p about 0.02
    as a small LM's geometric-mean token probability."""
    rng = np.random.default_rng(seed)
    members = rng.random((models, n)) < 0.5
    log_p = rng.normal(-4, 1.5, n)[None, :] + 1.0 * members + rng.normal(0, 0.2, (models, n))
    return np.exp(np.minimum(log_p, 0.0)), members


def test_rmia_finds_members_the_target_favours_and_no_others():
    p, members = _planted(2)
    raw = roc_auc(members[0], p[0])  # swamped by difficulty
    a = tuned_a(p, members, 0)
    tests = rmia(p, members, 0, a)
    assert raw < 0.8 and roc_auc(members[0], tests["online"]) > 0.95 and roc_auc(members[0], tests["offline"]) > 0.95
    assert all(((0 <= t) & (t <= 1)).all() for t in tests.values())  # shares of the population
    # At p about 0.02, a = 0.3 makes p(x) about the constant 0.35: the offline test is nearly the raw score.
    assert a >= 0.8 and roc_auc(members[0], rmia(p, members, 0, 0.3)["offline"]) < 0.85
    # The target's p independent of its membership (as if it never trained on them): chance.
    p[0] = np.exp(np.log(p[0]) - 1.0 * members[0])
    tests = rmia(p, members, 0, a)
    assert abs(roc_auc(members[0], tests["online"]) - 0.5) < 0.05
    assert abs(roc_auc(members[0], tests["offline"]) - 0.5) < 0.05


def test_rmias_offline_a_is_picked_without_reading_the_target():
    p, members = _planted(3, models=6, n=400)
    a = tuned_a(p, members, 2)
    assert a in A_GRID
    p[2], members[2] = np.random.default_rng(4).random(400), ~members[2]  # any other target: the same a
    assert tuned_a(p, members, 2) == a
    assert tuned_a(p[:2], members[:2], 0) == OFFLINE_A  # no third model to pick it on


def test_counterfactual_memorization_recovers_the_planted_effect():
    rng = np.random.default_rng(1)
    members = rng.random((12, 300)) < 0.5
    effect = rng.random(300)
    measure = rng.random(300)[None, :] + effect * members
    assert np.allclose(counterfactual(measure, members), effect)


def test_the_logit_confidence_is_log_p_over_one_minus_p():
    p = np.array([1e-9, 0.2, 0.5, 0.999999])
    assert np.allclose(logit_confidence(np.log(p)), np.log(p / (1 - p)))


@pytest.fixture(scope="module")
def shadow_sweep(tmp_path_factory, cache_dir):
    """A real 4-model sweep of memorizing tiny models through python -m gptfit.mia."""
    sweep = tmp_path_factory.mktemp("shadows")
    args = [
        *SUBSET,
        "data.train_tokens=4096",
        "model.n_embd=64",
        "train.max_steps=150",
        "train.eval_every=50",
        "eval.memorization_every=100",
        "decoding=none",
        f"data.cache_dir={cache_dir}",
    ]
    result = run_cli("-m", *args, "data.subset.seed=range(0,4)", f"hydra.sweep.dir={sweep}", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = run_cli(str(sweep), module="gptfit.mia")
    assert report.returncode == 0, report.stderr[-2000:]
    assert all(f"{name}: AUC" in report.stdout for name in ATTACKS), report.stdout  # RMIA's lines too
    return sweep


@pytest.mark.slow
def test_a_four_model_sweep_goes_through_lira_with_every_figure_in_range(shadow_sweep):
    record = json.loads((shadow_sweep / "mia_report.json").read_text())
    pooled = record["pooled"]
    assert set(pooled) == {"lira_online", "lira_offline", "rmia_online", "rmia_offline"} | {
        "loss",
        "zlib",
        "min_k",
        "min_k_plus_plus",
    }
    assert len(record["rmia_offline_a"]) == 4 and set(record["rmia_offline_a"]) <= set(A_GRID)
    for name, figures in pooled.items():
        assert 0.7 < figures["auc"] <= 1.0, name  # the models memorize: every attack sees it
        assert figures["auc_lo"] <= figures["auc"] <= figures["auc_hi"] <= 1.0
        assert figures["tpr@1%fpr"] is None and figures["tpr@0.1%fpr"] is None  # 4 x ~128 non-members
    text = (shadow_sweep / "mia_report.md").read_text()
    assert "Counterfactual memorization" in text and text.count("\n| ") >= 10 + 8 + 8
    assert "| rmia_online | " in text and "| rmia_offline | " in text
    for figure in ("mia_lira_roc.png", "mia_counterfactual.png"):
        assert (shadow_sweep / figure).stat().st_size > 10_000


@pytest.mark.slow
def test_a_shadow_sweep_of_one_model_is_one_line(shadow_sweep, tmp_path):
    import shutil

    shutil.copytree(shadow_sweep / "0", tmp_path / "0")
    result = run_cli(str(tmp_path), module="gptfit.mia")
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "at least 2" in lines[0]


@pytest.mark.parametrize(
    "override, says",
    [
        ("data.subset.fraction=1.0", "(0, 1)"),
        ("data.subset.fraction=0", "(0, 1)"),
        ("+data/duplicates=ladder", "cannot be combined"),
    ],
)
def test_a_bad_subset_is_one_line(override, says, tmp_path):
    result = run_cli(*SUBSET, override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "data.subset" in lines[0] and says in lines[0], lines
