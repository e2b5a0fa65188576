"""General ability: named general corpora scored at every evaluation (general/<name>/loss, bpb and acc,
forgetting/<name>, forgetting_acc/<name>), and how narrow the samples are (gen/<setting>/distinct_<n>,
general_copy_rate)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gptfit.config import ConfigError, EvalConfig, GeneralCorpus, ModelConfig, general_corpora
from gptfit.data.general import general_texts
from gptfit.errors import UserError
from gptfit.files import METRICS, SAMPLES, read_jsonl
from gptfit.metrics.diversity import distinct_n, narrowness
from gptfit.metrics.ngrams import NgramIndex
from tests.conftest import TINY

# The run's own corpus as a general corpus, scored on as many windows as val/loss: the same held-out text
# (same split) and the same windows, so its loss and bpb must equal val/loss and val/bpb exactly.
DOCS = "eval.general=[{name:docs,source:python_docs,windows:16}]"


@pytest.fixture(scope="module")
def general_run(make_config, tmp_path_factory):
    """A tiny run from scratch with a general corpus given explicitly: (run_dir, config, metrics rows)."""
    from gptfit.run.training import train

    run_dir = tmp_path_factory.mktemp("general_run")
    config = make_config([*TINY, DOCS, "eval.general_prompts=3", "decoding=greedy"], run_dir)
    train(config)
    return run_dir, config, read_jsonl(run_dir / METRICS)


@pytest.mark.slow
def test_general_keys_at_every_evaluation(general_run):
    _, _, rows = general_run
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20]
    for r in rows:
        assert {"general/docs/loss", "general/docs/bpb", "general/docs/acc", "forgetting/docs"} <= r.keys()
        assert "general/docs/ppl" not in r
        assert 0.0 <= r["general/docs/acc"] <= 1.0
        # The accuracy's change has a family of its own: forgetting/docs stays a key and no prefix.
        assert r["forgetting_acc/docs"] == rows[0]["general/docs/acc"] - r["general/docs/acc"]
        assert not any(k.startswith("forgetting/docs/") for k in r)
        # The same text and windows as val/: the same numbers.
        assert r["general/docs/loss"] == r["val/loss"] and r["general/docs/bpb"] == r["val/bpb"]
        assert r["forgetting/docs"] == r["general/docs/loss"] - rows[0]["general/docs/loss"]
    assert rows[0]["forgetting/docs"] == 0.0 and rows[0]["forgetting_acc/docs"] == 0.0
    # Fixed windows: bits per byte is the loss times one constant (tokens / bytes / ln 2).
    ratios = [r["general/docs/bpb"] / r["general/docs/loss"] for r in rows]
    assert ratios == pytest.approx([ratios[0]] * len(rows), rel=1e-9)
    assert 0.1 < ratios[0] < 1 / math.log(2)  # a token holds more than one byte


def test_narrowness_keys_and_general_prompts_in_samples(general_run):
    run_dir, config, rows = general_run
    for r in rows:
        assert {f"gen/greedy/distinct_{n}" for n in (1, 2, 3)} <= r.keys()
        assert 0.0 < r["gen/greedy/distinct_1"] <= 1.0
        assert 0.0 <= r["gen/greedy/general_copy_rate"] <= 1.0
    samples = read_jsonl(run_dir / SAMPLES)
    general = [s for s in samples if s["source"] == "general"]
    assert len(general) == 3 * len(rows)  # 3 prompts, one greedy sample each, at every evaluation
    assert all(len(s["prompt_ids"]) == config.eval.prompt_tokens for s in general)
    assert {s["source"] for s in samples} == {"held-out", "prompt", "general"}
    at_step = [s["prompt_ids"] for s in general if s["step"] == 0]
    assert all([s["prompt_ids"] for s in general if s["step"] == step] == at_step for step in (5, 10, 15, 20))


def test_a_resumed_evaluator_takes_the_start_from_the_first_row(general_run):
    """Resuming, the evaluator has never seen step 0: the first metrics row gives it the starting loss."""
    from gptfit.data.corpus import run_corpus
    from gptfit.measures.base import Evaluation, Setup
    from gptfit.measures.general import GeneralLosses
    from gptfit.measures.generation import prompts_of
    from gptfit.model.loading import load_model
    from gptfit.run.evaluation import Evaluator

    run_dir, config, rows = general_run
    corpus = run_corpus(config.model, config.data, config.eval)

    def setup(general) -> Setup:
        return Setup(
            config.eval,
            {},
            corpus,
            corpus.tokenizer,
            block_size=config.model.block_size,
            eval_every=config.train.eval_every,
            seed=config.seed,
            split_seed=config.data.split_seed,
            general=general,
            cache_dir=config.data.cache_dir,
        )

    resumed = Evaluator(setup(general_corpora(config.eval, config.model)))
    general = resumed.measure_of(GeneralLosses)
    model = load_model(str(run_dir / "final"))
    assert "forgetting/docs" not in general(Evaluation(model, 20))  # no start known: no forgetting
    resumed.resume(rows[0])
    assert general(Evaluation(model, 20)) == {
        k: v for k, v in rows[-1].items() if k.startswith(("general/docs/", "forgetting/docs", "forgetting_acc/docs"))
    }
    # From scratch, by default: nothing general is measured or prompted.
    plain = setup(general_corpora(EvalConfig(), config.model))
    assert Evaluator(plain).measure_of(GeneralLosses) is None
    assert all(source != "general" for source, _ in prompts_of(plain))


def test_the_default_is_the_base_held_out_text_when_fine_tuning_the_base_and_none_from_scratch():
    assert general_corpora(EvalConfig(), ModelConfig()) == []
    assert general_corpora(EvalConfig(), ModelConfig(kind="hf", name_or_path="gpt2")) == []
    base = general_corpora(EvalConfig(), ModelConfig(kind="base"))
    assert base == [GeneralCorpus(name="base", source="python_stdlib")]
    assert (base[0].split_seed, base[0].val_fraction) == (0, 0.1)  # the base's own split: unseen text
    assert general_corpora(EvalConfig(general=[]), ModelConfig(kind="base")) == []
    mine = [GeneralCorpus(name="docs", source="python_docs")]
    assert general_corpora(EvalConfig(general=mine), ModelConfig()) == mine


def test_general_corpora_are_checked_with_the_config(make_config, tmp_path):
    config = make_config([DOCS])
    assert config.eval.general == [GeneralCorpus(name="docs", source="python_docs", windows=16)]
    bad = (
        "eval.general=[{name:a,source:text},{name:a,source:grammar,windows:0},"
        f"{{name:'',source:text,path:{tmp_path}/missing.txt}}]"
    )
    with pytest.raises(ConfigError) as e:
        make_config([bad, "eval.general_prompts=-1"])
    problems = e.value.problems
    for expected in (
        "eval.general[0].path=None",
        "eval.general[0].name='a': must be unique",
        "eval.general[1].source='grammar'",
        "eval.general[1].windows=0",
        "eval.general[2].name=''",
        "eval.general[2].path=",
        "eval.general_prompts=-1",
    ):
        assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_a_missing_or_empty_general_corpus_is_one_user_error_naming_it(make_config, tmp_path, cache_dir):
    from gptfit.data.corpus import load_corpus

    tokenizer = load_corpus(make_config(TINY).data).tokenizer
    empty = tmp_path / "empty"
    empty.mkdir()
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n")
    cases = {
        str(empty): "eval.general[1].path=",  # a folder without files
        str(blank): "eval.general[1]: the corpus",  # nothing but blank lines
        str(tmp_path / "gone.txt"): "eval.general[1].path=",  # removed after the config was checked
    }
    for path, start in cases.items():
        corpora = [
            GeneralCorpus(name="docs", source="python_docs"),
            GeneralCorpus(name="mine", source="text", path=path),
        ]
        with pytest.raises(UserError) as e:
            general_texts(corpora, tokenizer, tokenizer.eos_token_id, cache_dir, 48)
        assert str(e.value).startswith(start), str(e.value)


def test_a_bad_general_corpus_stops_the_run_before_training(make_config, tmp_path):
    from gptfit.run.training import train

    empty = tmp_path / "empty"
    empty.mkdir()
    config = make_config([*TINY, f"eval.general=[{{name:mine,source:text,path:{empty}}}]"], tmp_path / "run")
    with pytest.raises(UserError, match=r"^eval\.general\[0\]\.path="):
        train(config)
    assert read_jsonl(tmp_path / "run" / METRICS) == []  # not even the evaluation of step 0


def brute_distinct(samples: list[list[int]], n: int) -> float:
    grams = [tuple(s[i : i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams)


def test_distinct_n_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    for trial in range(20):
        samples = [rng.integers(0, 6, rng.integers(0, 12)) for _ in range(rng.integers(1, 6))]
        for n in (1, 2, 3):
            lists = [s.tolist() for s in samples]
            if not any(len(s) >= n for s in lists):
                assert distinct_n(samples, n) is None
            else:
                assert distinct_n(samples, n) == brute_distinct(lists, n), (trial, n)
    # n-grams never span two samples; a sample repeated twice halves every share.
    assert distinct_n([np.array([1, 2]), np.array([3, 4])], 2) == 1.0
    assert distinct_n([np.arange(5), np.arange(5)], 3) == 0.5


def test_general_copy_rate_counts_copies_from_general_prompts_only():
    train = np.random.default_rng(1).integers(0, 50, 400)
    index = NgramIndex(train, copy_span=6)
    copies = [train[10:20], train[200:206]]  # verbatim spans of 10 and 6 training tokens
    novel = [np.arange(100, 110), np.array(list(itertools.chain(train[0:5], [99], train[5:10])))]
    row = narrowness("greedy", copies + novel, ["general", "general", "held-out", "held-out"], index)
    assert row["gen/greedy/general_copy_rate"] == 1.0
    row = narrowness("greedy", novel + copies, ["general", "general", "prompt", "held-out"], index)
    assert row["gen/greedy/general_copy_rate"] == 0.0
    row = narrowness("greedy", copies, ["held-out", "prompt"], index)  # no general prompts: no rate
    assert "gen/greedy/general_copy_rate" not in row
    assert row["gen/greedy/distinct_1"] == distinct_n(copies, 1)
