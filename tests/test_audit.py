"""The privacy audit in one training run (data.audit; Steinke, Nasr and Jagielski 2023): the bound's
arithmetic, the audit sequences' planting, bad values, and real runs: a memorizing run refutes epsilon 1,
and DP-SGD runs never get a lower bound above their accountant's epsilon."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gptfit.config import ConfigError, validate
from gptfit.data.audit import draw_audit, plant_audit
from gptfit.metrics.audit import epsilon_lower_bound, guesses, p_value
from gptfit.run.training import train
from tests.conftest import TINY, run_cli


def test_every_guess_right_refutes_exactly_the_binomial_tail():
    # delta 0, r guesses all right: p(eps) = q^r, so the bound is the eps with q^r = 0.05.
    for r in (20, 200):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(r, r, 1000, 0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-9)
    assert epsilon_lower_bound(200, 200, 1000, 0.0) == pytest.approx(4.19, abs=0.01)


def test_chance_refutes_nothing_and_more_right_refutes_more():
    assert epsilon_lower_bound(200, 100, 1000, 0.0) == 0.0 and epsilon_lower_bound(0, 0, 1000, 0.0) == 0.0
    bounds = [epsilon_lower_bound(200, v, 1000, 1e-5) for v in (120, 150, 180, 200)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    assert epsilon_lower_bound(200, 180, 1000, 1e-4) < epsilon_lower_bound(200, 180, 1000, 0.0)  # delta costs
    assert p_value(0.0, 10, 10, 100, 0.0) == pytest.approx(0.5**10)


def test_guesses_take_the_highest_in_and_the_lowest_out():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5, 0.3])
    included = np.array([True, True, False, False, True, False])
    # in: 0.9 (right), 0.8 (wrong); out: 0.2 (right), 0.1 (wrong)
    assert guesses(scores, included, 2, 2) == (4, 2)
    assert guesses(scores, included, 1, 0) == (1, 1)


def test_audit_sequences_are_planted_once_each_and_only_when_included():
    from types import SimpleNamespace

    config = SimpleNamespace(sequences=300, length=8, probability=0.5, guesses=10, seed=3)
    audit = draw_audit(config, vocab=64, eot_id=0)
    assert audit.tokens.shape == (300, 8) and not (audit.tokens == 0).any() and audit.tokens.max() == 63
    assert 120 < audit.included.sum() < 180
    train_ids = np.tile(np.r_[np.arange(1, 20), 0], 50)  # 50 documents of 19 tokens
    planted = plant_audit(train_ids, audit, eot_id=0, seed=3)
    assert len(planted) == len(train_ids) + 9 * audit.included.sum()
    text = " ".join(map(str, planted.tolist()))
    found = [text.count(" ".join(map(str, row))) for row in audit.tokens.tolist()]
    assert found == audit.included.astype(int).tolist()


@pytest.mark.parametrize(
    "override, says",
    [
        ("data.audit.sequences=-5", "data.audit.sequences=-5: must be >= 0 (0 turns the audit off)"),
        ("data.audit.probability=1.5", "data.audit.probability=1.5: must be in (0, 1)"),
        ("data.audit.guesses=600", "data.audit.guesses=600: must be at most half of sequences=1000"),
    ],
)
def test_bad_audit_values_are_one_problem(compose_cfg, override, says):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(["+experiment=dp_audit", override]))
    assert info.value.problems == [says]


def test_a_bad_audit_value_on_the_command_line_is_one_line(tmp_path):
    bad = ["data.audit.sequences=100", "data.audit.guesses=10", "data.audit.probability=0"]
    result = run_cli(*TINY, *bad, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and result.stderr.strip() == "error: data.audit.probability=0.0: must be in (0, 1)"


AUDITED = [
    *TINY,
    "data.audit.sequences=200",
    "data.audit.guesses=50",
    "data.audit.length=12",
    "train.max_steps=160",
    "train.eval_every=80",
    "decoding=none",
]


def audited(make_config, folder, *extra):
    train(make_config([*AUDITED, *extra], folder))
    final = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    return final, json.loads((folder / "summary.json").read_text())["audit"]


@pytest.mark.slow
def test_a_run_that_memorizes_its_audit_sequences_refutes_epsilon_one(make_config, tmp_path):
    final, audit = audited(make_config, tmp_path / "run")
    assert audit["sequences"] == 200 and audit["guesses"] == 100 and final["privacy/epsilon_lower"] >= 1.0, audit
    assert "privacy/epsilon" not in final and audit["delta"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.5, 2.0])
def test_dp_sgd_runs_never_get_a_lower_bound_above_their_epsilon(make_config, tmp_path, noise):
    final, audit = audited(make_config, tmp_path / "run", f"train.dp.noise_multiplier={noise}")
    assert 0.0 <= final["privacy/epsilon_lower"] <= final["privacy/epsilon"], (final, audit)
    assert audit["delta"] > 0
