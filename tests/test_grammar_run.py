"""data=grammar end to end: held-out sentences kept out of training, bad knobs in one line, and a tiny model
that memorizes its grammar corpus scored as copying, against the grammar's own NLL."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml

from gptfit.data.corpus import load_corpus, split_documents
from gptfit.data.sources import load_documents
from gptfit.measures.grammar import complete_sentences
from tests.conftest import TINY, run_cli

# A language small enough that many sentences repeat, so the held-out split must drop some.
SMALL_LANGUAGE = [
    "data=grammar",
    "data.vocab_size=512",
    "data.grammar.n_nouns=2",
    "data.grammar.n_verbs=2",
    "data.grammar.n_adjectives=1",
    "data.grammar.max_depth=0",
    "data.grammar.p_pp=0.1",
    "data.grammar.p_vp_pp=0.1",
    "data.grammar.n_sentences=400",
    "data.train_tokens=1024",
]
# The tiny run: ~40 sentences of a 40-word language, trained long enough to learn them by heart.
MEMORIZE = [
    *TINY,
    "data=grammar",
    "data.vocab_size=512",
    "data.grammar.n_nouns=12",
    "data.grammar.n_verbs=12",
    "data.grammar.n_adjectives=6",
    "data.grammar.max_depth=1",
    "data.grammar.n_sentences=1000",
    "data.train_tokens=512",
    "model.n_embd=64",
    "train.max_steps=300",
    "train.eval_every=300",
    "train.save_every=300",
    "eval.heldout_prompts=16",
    "decoding=[greedy,sample]",
    # Long samples: an untrained model writes end-of-text about once per vocabulary size of tokens.
    "decoding.sample.max_new_tokens=256",
]


def decode_documents(tokenizer, stream: np.ndarray, eot: int) -> list[str]:
    """The complete documents of a token stream (each followed by end-of-text)."""
    ends = np.flatnonzero(stream == eot)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(stream[a:b].tolist()) for a, b in zip(starts, ends)]


def test_heldout_sentences_never_occur_in_training(make_config):
    cfg = make_config(SMALL_LANGUAGE)
    corpus = load_corpus(cfg.data)
    pool, _ = split_documents(load_documents(cfg.data, cfg.data.cache_dir), cfg.data.split_seed, cfg.data.val_fraction)
    heldout = decode_documents(corpus.tokenizer, corpus.val, corpus.eot_id)
    assert heldout == corpus.val_documents and len(heldout) == corpus.n_val_docs > 5
    assert corpus.val_dropped > 0  # the small language repeats itself: the split alone would have leaked
    assert not set(heldout) & set(pool)
    training = decode_documents(corpus.tokenizer, corpus.train, corpus.eot_id)
    assert training == corpus.train_documents and len(training) > 20


def test_bad_grammar_knob_is_one_error_line():
    result = run_cli("data=grammar", "data.grammar.p_relative=1.5", "logger=none")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: data.grammar.p_relative=1.5: must be in [0, 1]"]
    result = run_cli("data=grammar", "data.grammar.n_nouns=many", "logger=none")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: ") and "data.grammar.n_nouns" in lines[0]


def test_config_validation_reports_every_grammar_problem(compose_cfg):
    from gptfit.config import ConfigError, validate

    cfg = compose_cfg(
        ["data=grammar", "data.grammar.n_nouns=0", "data.grammar.zipf=-1", "data.grammar.n_sentences=1", "train.lr=-1"]
    )
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    named = sorted(p.split("=")[0] for p in e.value.problems)
    assert named == ["data.grammar.n_nouns", "data.grammar.n_sentences", "data.grammar.zipf", "train.lr"]


def test_complete_sentences_need_a_known_start_and_an_end_among_the_new_tokens():
    eot = 0
    # [eot] the dog | runs . [eot] a cat . [eot] unfinished
    assert complete_sentences([0, 1, 2], [3, 4, 0, 5, 6, 4, 0, 7], eot) == [[1, 2, 3, 4], [5, 6, 4]]
    # No end-of-text in the prompt: the first stretch's start is unknown; the one after it counts.
    assert complete_sentences([9, 1], [2, 0, 5, 4, 0], eot) == [[5, 4]]
    # A document already ended inside the prompt is not the model's; an empty one is (and is invalid).
    assert complete_sentences([0, 1, 0, 2], [3, 0, 0], eot) == [[2, 3], []]
    assert complete_sentences([0, 1], [2, 3], eot) == []


@pytest.fixture(scope="module")
def memorized(make_config, tmp_path_factory):
    """A tiny GPT trained to memorize ~40 grammar sentences: (run_dir, metrics rows, the corpus)."""
    import torch

    from gptfit.run.training import train

    run_dir = tmp_path_factory.mktemp("grammar_run")
    cfg = make_config(MEMORIZE, run_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer model gains nothing from more, and loses much on a busy machine
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert summary["status"] == "finished"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, rows, load_corpus(cfg.data)


@pytest.mark.slow
def test_a_memorizing_model_copies_under_greedy_decoding(memorized):
    _, rows, _ = memorized
    final = rows[-1]
    assert final["train/loss"] < 0.3  # it did learn its training text by heart
    assert final["grammar/greedy/sentences"] >= 10
    assert final["grammar/greedy/copied"] > 0.8
    for setting in ("greedy", "sample"):
        shares = [final[f"grammar/{setting}/{k}"] for k in ("copied", "novel_valid", "invalid")]
        assert sum(shares) == pytest.approx(1.0)


def test_an_untrained_model_writes_invalid_sentences(memorized):
    _, rows, _ = memorized
    first = rows[0]
    assert first["step"] == 0
    assert first["grammar/sample/sentences"] >= 5
    assert first["grammar/sample/invalid"] > 0.8 and first["grammar/sample/copied"] == 0


def test_model_and_grammar_nll_of_heldout_sentences(memorized):
    _, rows, corpus = memorized
    first, final = rows[0], rows[-1]
    for row in (first, final):
        for key in ("grammar/val_nll_model", "grammar/val_nll_true"):
            assert math.isfinite(row[key]) and row[key] > 0
    assert first["grammar/val_nll_true"] == final["grammar/val_nll_true"]  # the same sentences every time
    # Untrained, every token costs about log(vocabulary): the sum runs over each sentence's tokens and the
    # end-of-text after it.
    ids = corpus.tokenizer(corpus.val_documents[:256], add_special_tokens=False)["input_ids"]
    expected = np.mean([len(t) + 1 for t in ids]) * math.log(len(corpus.tokenizer))
    assert first["grammar/val_nll_model"] == pytest.approx(expected, rel=0.05)
    # A model that memorized 40 sentences is far worse than the grammar on sentences it never saw.
    assert final["grammar/val_nll_model"] > final["grammar/val_nll_true"] + 10


@pytest.mark.slow
def test_the_report_shows_the_grammar_metrics(memorized, tmp_path):
    from gptfit.report import report

    run_dir, _, _ = memorized
    sweep = tmp_path / "sweep"
    summary = json.loads((run_dir / "summary.json").read_text())
    # Three jobs of a corpus-size ladder, made from the one run with their sizes and shares changed.
    for job, (size, novel) in enumerate([(512, 0.1), (1024, 0.3), (2048, 0.6)]):
        d = sweep / str(job)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.train_tokens={size}"]))
        shutil.copy(run_dir / "metrics.jsonl", d / "metrics.jsonl")
        final = {
            **summary["final"],
            "grammar/greedy/novel_valid": novel,
            "grammar/greedy/copied": 0.9 - novel,
            "grammar/greedy/invalid": 0.1,
        }
        summary_job = {
            **summary,
            "final": final,
            "config": {**summary["config"], "data": {**summary["config"]["data"], "train_tokens": size}},
        }
        (d / "summary.json").write_text(json.dumps(summary_job))
    text = report(sweep).read_text()
    grammar = text.split("## Grammar")[1].split("\n## ")[0]
    assert "NLL model" in grammar and "NLL grammar" in grammar
    assert [line.split("|")[3].strip() for line in grammar.splitlines() if line.startswith("| 2048 | greedy")] == [
        "0.600"
    ]
    assert len([line for line in grammar.splitlines() if line.startswith("| 512 | ")]) == 1 + 2  # NLL + 2 settings
    assert "novel-valid share (greedy): 1.000" in text
    assert (sweep / "report_grammar.png").stat().st_size > 5000


def test_the_grammar_figure_of_runs_whose_samples_held_no_whole_sentence_is_drawn(tmp_path):
    # A short fine-tuning on the grammar: sentences were looked for, none was complete, so no share exists.
    from gptfit.record import RunRecord
    from gptfit.show.sweep_figures import grammar_figure

    final = {"grammar/greedy/sentences": 0, "grammar/val_nll_model": 30.0, "grammar/val_nll_true": 20.0}
    runs = [RunRecord(tmp_path, "0", {"status": "finished", "final": final, "config": {"data": {"train_tokens": 512}}})]
    fig = grammar_figure(runs)
    fig.savefig(tmp_path / "grammar.png")  # a log axis with nothing on it would raise here
    shares, nll = fig.axes
    assert shares.get_xscale() == "linear" and "no run measured this" in shares.texts[0].get_text()
    assert nll.get_xscale() == "log" and len(nll.get_lines()) == 2
