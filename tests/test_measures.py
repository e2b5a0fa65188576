"""The measures (gptfit/measures/): every key a run writes is declared by one of its measures, each measure
runs at its cadence, and a run builds only the measures its config calls for."""

from __future__ import annotations

import pytest
import torch

from gptfit.data.corpus import load_corpus
from gptfit.files import read_jsonl
from gptfit.measures.base import When, declares
from gptfit.model.loading import build_model
from gptfit.run.callback import RUN_KEYS
from gptfit.run.training import make_evaluator
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # each test builds a corpus and scores a model

CANARY = '+data.canaries=[{name: pin, format: "my pin is ####", repeats: 2}]'
# Configs that between them build every measure of the registry.
CONFIGS = {
    "tiny, planted": [
        "+data/duplicates=ladder",
        "data.duplicates.counts=[1,2]",
        "+data/forget=default",
        "data.forget.until_step=10",
        "model.block_size=64",
        "data.audit.sequences=20",
        "data.audit.guesses=5",
    ],
    "grammar, canaries, attention": ["data=grammar", CANARY, "eval.attention=true", "decoding=all"],
    "uniform": [
        "data=uniform",
        "data.uniform.vocab=16",
        "data.uniform.length=15",
        "data.uniform.sequences=32",
        "model.block_size=16",
        "eval.prefix_tokens=7",
        "eval.suffix_tokens=8",
        "eval.heldout_prompts=0",
        "eval.train_windows=8",
        "eval.val_windows=8",
    ],
}


@pytest.fixture(scope="module")
def evaluator_of(make_config):
    """name -> the evaluator of that config (built once for the module)."""
    built = {}

    def of(name: str):
        if name not in built:
            cfg = make_config([*TINY, *CONFIGS[name]])
            corpus = load_corpus(cfg.data)
            built[name] = (make_evaluator(cfg, corpus), cfg, corpus)
        return built[name]

    return of


def undeclared(evaluator, row: dict) -> list[str]:
    return [k for k in row if k not in RUN_KEYS and not any(declares(m, k) for m in evaluator.measures)]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_key_of_an_evaluation_is_declared_by_a_measure(evaluator_of, name):
    evaluator, cfg, corpus = evaluator_of(name)
    torch.manual_seed(0)
    model = build_model(cfg.model, corpus.tokenizer)
    row, ev = evaluator(model, 0, final=True)
    assert row and not undeclared(evaluator, row), undeclared(evaluator, row)
    assert ev.table is not None and len(ev.table) > 0
    # Each measure wrote at least one of its keys (it was built because the run calls for it).
    silent = [type(m).__name__ for m in evaluator.measures if not any(declares(m, k) for k in row)]
    assert not silent, silent


def test_the_configs_build_every_measure_of_the_registry(evaluator_of):
    from gptfit.measures import REGISTRY

    built = {m.__module__ for name in CONFIGS for m in evaluator_of(name)[0].measures}
    # general (fine-tuning), privacy (DP-SGD), unlearning (a source and a retrained model) and pretraining (a
    # fine-tuning that follows its base's memorized text) are checked on their own runs, below, in
    # test_general.py, test_unlearning.py (whose keys it checks against the measure's declaration) and
    # test_finetune_runs.py.
    own_runs = {
        "gptfit.measures.general",
        "gptfit.measures.privacy",
        "gptfit.measures.unlearning",
        "gptfit.measures.pretraining",
    }
    assert built == {b.__module__ for b in REGISTRY} - own_runs


def test_the_cadence_decides_which_measures_run(make_config):
    cfg = make_config([*TINY, "eval.memorization_every=2", "eval.generation_every=3"])
    evaluator = make_evaluator(cfg, load_corpus(cfg.data))
    every = cfg.train.eval_every
    assert evaluator.due(every, final=False) == {When.EACH}
    assert evaluator.due(2 * every, final=False) == {When.EACH, When.TABLE}
    assert evaluator.due(3 * every, final=False) == {When.EACH, When.SAMPLES}
    assert evaluator.due(every, final=True) == {When.EACH, When.TABLE, When.SAMPLES}


def test_a_finished_runs_rows_hold_only_declared_keys(tiny_corpus_run, make_config):
    rows = read_jsonl(tiny_corpus_run / "metrics.jsonl")
    cfg = make_config(["+experiment=tiny_corpus"])
    evaluator = make_evaluator(cfg, load_corpus(cfg.data))
    assert len(rows) == 17 and all(not undeclared(evaluator, r) for r in rows)
    assert any(k.startswith("gen/") for k in rows[-1]) and any(k.startswith("mia/") for k in rows[-1])


def test_a_dp_run_writes_its_epsilon_through_its_measure(make_config, tmp_path):
    from gptfit.run.training import train

    cfg = make_config([*TINY, "train.dp.noise_multiplier=1.0", "train.max_steps=4", "train.eval_every=2"], tmp_path)
    train(cfg)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4] and rows[0]["privacy/epsilon"] == 0.0
    assert 0 < rows[1]["privacy/epsilon"] < rows[2]["privacy/epsilon"]
