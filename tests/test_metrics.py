"""Memorization metrics as specifications: a model made to memorize scores as memorized, an untrained one not."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gptfit.data import suffixes
from gptfit.data.canaries import make_canaries
from gptfit.data.corpus import load_corpus
from gptfit.measures.canaries import enumerated_rank, every_filling, exposure, skew_normal_rank
from gptfit.metrics.ngrams import NgramIndex
from gptfit.model.loading import build_model, load_pretrained
from gptfit.run.training import make_evaluator, train
from tests.conftest import TINY

# 512 tokens, each seen ~450 times (the last ones, which fewer windows hold, less).
# A 16-token prefix locates a window in the training text without ambiguity.
MEMORIZE = [
    *TINY,
    "model.n_embd=128",
    "data.train_tokens=512",
    "train.max_steps=600",
    "train.eval_every=150",
    "train.lr=5e-3",
    "train.warmup_steps=10",
    "eval.sequences=256",
    "eval.prefix_tokens=16",
    "eval.suffix_tokens=16",
]


@pytest.fixture(scope="module")
def memorized_run(make_config, tmp_path_factory):
    """A tiny model trained to near-zero loss on 512 tokens: its run folder."""
    run_dir = tmp_path_factory.mktemp("memorized")
    train(make_config(MEMORIZE, run_dir))
    return run_dir


@pytest.fixture(scope="module")
def memorized(memorized_run):
    """The memorizing run's metrics.jsonl rows."""
    return [json.loads(line) for line in (memorized_run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_memorizing_model_scores_as_memorized(memorized):
    final = memorized[-1]
    assert final["train/loss"] < 0.1
    assert final["mem/extraction_rate_train"] >= 0.9
    assert final["mem/mia_auc"] >= 0.9
    assert final["mem/exact_match_train"] > 0.9 > 0.3 > final["mem/exact_match_val"]
    assert final["mem/extraction_rate_val"] <= 0.1


@pytest.mark.slow
def test_an_untrained_model_does_not(make_config, cache_dir):
    cfg = make_config([*TINY, "data.train_tokens=16384", "eval.sequences=256"])
    corpus = load_corpus(cfg.data)
    evaluator = make_evaluator(cfg, corpus)
    for seed in range(3):
        torch.manual_seed(seed)
        row, _ = evaluator.table_only(build_model(cfg.model, corpus.tokenizer), 0, None, final=False)
        assert row["mem/extraction_rate_train"] <= 0.05
        assert 0.4 <= row["mem/mia_auc"] <= 0.6


def test_a_memorizing_model_extracts_more_than_an_untrained_one_under_every_setting(memorized, make_config):
    cfg = make_config(MEMORIZE)
    corpus = load_corpus(cfg.data)
    torch.manual_seed(0)
    untrained, _ = make_evaluator(cfg, corpus).table_only(build_model(cfg.model, corpus.tokenizer), 0, None, False)
    final = memorized[-1]
    for name in cfg.decoding:
        for key in (f"mem/{name}/extraction_rate", f"mem/{name}/extraction_any"):
            assert final[key] > untrained[key] + 0.3, (key, final[key], untrained[key])
            assert final[key] <= 1.0
    assert final["mem/temp_high/extraction_rate"] < final["mem/greedy/extraction_rate"]  # sampling loses some
    assert final["mem/temp_high/extraction_any"] >= final["mem/temp_high/extraction_rate"]


def test_sampled_completions_extract_as_often_as_the_exact_probability_says(memorized_run):
    # Draw real samples under T = 1.3 from every training sequence's prefix: the share of exact suffixes
    # must match the mean teacher-forced probability within its sampling error.
    from gptfit.core.sampling import generate
    from gptfit.model.loading import load_model

    table = pd.read_parquet(memorized_run / "sequences.parquet")
    final = table[(table.step == table.step.max()) & (table.split == "train")]
    tokens = torch.tensor(np.stack(final.tokens.to_numpy()))  # [n, 32]
    p = final["extraction/temp_high"].to_numpy()
    model, draws = load_model(str(memorized_run / "final")), 40
    setting = dict(do_sample=True, temperature=1.3, max_new_tokens=16, num_return_sequences=draws)
    new = generate(model, tokens[:, :16], setting, eos_token_id=[], seed=7).new_tokens.view(len(p), draws, 16)
    hits = (new == tokens[:, None, 16:]).all(-1).sum().item()
    expected, spread = draws * p.sum(), np.sqrt(draws * (p * (1 - p)).sum())
    assert 0.05 < p.mean() < 0.95  # a setting where sampling is neither sure to copy nor sure not to
    assert abs(hits - expected) <= 4 * spread + 1, (hits, expected, spread)


def test_generation_metrics_are_logged_for_every_decoding_setting(memorized, make_config):
    settings = make_config([]).decoding.keys()
    final = memorized[-1]
    for name in settings:
        assert 0.0 <= final[f"gen/{name}/copy_rate"] <= 1.0
        assert final[f"gen/{name}/longest_copy_tokens"] >= 0
        assert f"gen/{name}/novel_1gram" in final


def test_greedy_samples_of_a_memorizing_model_are_copies(memorized):
    final = memorized[-1]
    assert final["gen/greedy/copy_rate"] >= 0.5
    assert final["gen/greedy/longest_copy_tokens"] >= 6


def test_ngram_novelty_of_a_verbatim_excerpt_is_zero_and_of_random_tokens_near_one():
    rng = np.random.default_rng(0)
    train_tokens = rng.integers(0, 500, 20_000)
    index = NgramIndex(train_tokens, copy_span=16)
    excerpt = train_tokens[1000:1100]
    assert index.novelty([excerpt], 8) == 0.0 and index.novelty([excerpt], 1) == 0.0
    noise = rng.integers(10_000, 20_000, 200)
    assert index.novelty([noise], 8) == 1.0 and index.novelty([noise], 1) == 1.0
    shuffled = rng.permutation(excerpt)
    assert index.novelty([shuffled], 8) > 0.9


def test_longest_copy_finds_a_planted_span_exactly():
    rng = np.random.default_rng(1)
    train_tokens = rng.integers(0, 500, 20_000)
    index = NgramIndex(train_tokens, copy_span=16)
    noise = lambda n: rng.integers(1000, 2000, n)  # noqa: E731  (tokens never seen in training)
    for length in (3, 8, 9, 23):
        sample = np.concatenate([noise(10), train_tokens[5000 : 5000 + length], noise(10)])
        assert index.longest_copy(sample) == (length, 10)
        assert index.has_copy(sample) == (length >= 16)


def test_the_suffix_array_answers_as_a_brute_force_search_does():
    # A small alphabet, so that spans repeat: every position's longest training match, every n-gram flag,
    # and the copied spans with where they occur, against a search of every training offset.
    rng = np.random.default_rng(3)
    train_tokens = rng.integers(0, 4, 3_000)
    index = NgramIndex(train_tokens, copy_span=6)
    text = train_tokens.tolist()

    def longest_at(query: list[int]) -> int:
        best = 0
        for start in range(len(text)):
            k = 0
            while k < len(query) and start + k < len(text) and text[start + k] == query[k]:
                k += 1
            best = max(best, k)
        return best

    for trial in range(20):
        sample = np.concatenate(
            [rng.integers(0, 4, 5), train_tokens[trial * 100 : trial * 100 + 12], rng.integers(0, 6, 5)]
        )
        lengths = [longest_at(sample[i:].tolist()) for i in range(len(sample))]
        assert index.matches(sample)[0].tolist() == lengths
        for n in (1, 3, 6, 9):
            assert index.contains(sample, n).tolist() == [m >= n for m in lengths[: len(sample) - n + 1]]
        assert index.longest_copy(sample) == (max(lengths), lengths.index(max(lengths)))
        for start, end, where in index.copied_spans(sample):
            assert where < 0 or text[where : where + end - start] == sample[start:end].tolist()


@pytest.mark.parametrize("vocab", [3, 300, 70_000, 2**20])  # 1, 2, 3 and 3 bytes a token
def test_the_suffix_array_sorts_token_suffixes_at_every_width(vocab, monkeypatch):
    # Chunks of 64 positions, so that encoding and compacting cross many chunk boundaries; a repeated
    # stretch, so that long suffixes tie on their first tokens.
    monkeypatch.setattr(suffixes, "_CHUNK", 64)
    rng = np.random.default_rng(vocab)
    tokens = rng.integers(0, vocab, 700)
    tokens[400:600] = tokens[100:300]
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    order = suffixes.suffix_array(tokens.astype(dtype))
    text = tokens.tolist()
    assert order.tolist() == sorted(range(len(text)), key=lambda i: text[i:])
    assert suffixes.suffix_array(np.zeros(0, np.uint16)).tolist() == []


def test_exposure_of_a_hand_built_ranking_equals_the_formula():
    # 16 fillings in all, the canary ranked 4th: exposure = log2 16 - log2 4 = 2.
    others = np.array([0.1, 0.2, 0.3] + [5.0] * 12)
    assert exposure(enumerated_rank(1.0, others), space_size=16) == pytest.approx(2.0)
    assert enumerated_rank(0.2, others) == 2.5  # a tie counts half
    # Ranked first of 10,000: the largest exposure, log2 10,000.
    assert exposure(enumerated_rank(0.0, np.ones(9_999)), space_size=10_000) == pytest.approx(math.log2(10_000))


def test_the_skew_normal_rank_is_continuous_where_sampling_jumps():
    # Sampled losses of a space of 10^6: as the secret's loss falls through the sample's lower tail, the fitted
    # rank falls smoothly (the old share-of-sample estimate jumped from 1 to about 4,000 at the lowest one).
    losses = np.random.default_rng(0).normal(30.0, 2.0, 255)
    secret_losses = np.linspace(losses.min() - 3, losses.min() + 1, 41)
    exposures = np.array([exposure(skew_normal_rank(s, losses, 10**6), 10**6) for s in secret_losses])
    assert np.all(np.diff(exposures) <= 1e-9) and np.max(-np.diff(exposures)) < 1.0
    assert exposures[-1] < exposures[0] <= math.log2(10**6)
    # At the median of its own candidates the secret is mid-ranked: about half the space beats it.
    assert exposure(skew_normal_rank(float(np.median(losses)), losses, 10**6), 10**6) == pytest.approx(1.0, abs=0.3)


def test_canary_candidates_share_the_format_and_never_the_secret():
    from omegaconf import OmegaConf

    spec = OmegaConf.create([{"name": "pin", "format": "my pin is ####", "repeats": 3}])
    canary = make_canaries(spec, split_seed=0)[0]
    candidates = canary.candidates(100, seed=0)
    assert len(set(candidates)) == 100 and canary.secret not in candidates
    assert all(c.startswith("my pin is ") and c[-4:].isdigit() for c in candidates)
    assert len(canary.candidates(10**5, seed=0)) == 9_999  # the whole space but the secret


@pytest.mark.slow
def test_a_canary_planted_many_times_is_more_exposed_than_one_planted_once(make_config, tmp_path):
    canaries = (
        '+data.canaries=[{name: often, format: "my pin is ####", repeats: 40},'
        ' {name: once, format: "the code is ####", repeats: 1}]'
    )
    cfg = make_config(
        [
            *TINY,
            "model.n_embd=64",
            "data.train_tokens=8192",
            "train.max_steps=120",
            "train.eval_every=120",
            "train.lr=1e-2",
            canaries,
            "decoding=none",
        ],
        tmp_path / "run",
    )
    corpus = load_corpus(cfg.data)
    text = corpus.tokenizer.decode(corpus.train.tolist())
    often, once = corpus.canaries
    assert text.count(often.secret) == 40 and text.count(once.secret) == 1
    assert often.secret not in corpus.tokenizer.decode(corpus.val.tolist())
    train(cfg)
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["canary/often/exposure"] > final["canary/once/exposure"] + 2
    # The last evaluation enumerates each space of 10^4: the rank is the brute-force count of fillings with a
    # lower loss, each filling scored alone (no batch, no padding).
    listed = {c["name"]: c for c in json.loads((tmp_path / "run" / "summary.json").read_text())["canaries"]}
    model, tokenizer = load_pretrained(str(tmp_path / "run" / "final"))
    fits = {}
    for canary in corpus.canaries:
        texts = every_filling(canary)
        losses = unpadded_losses(model, [[corpus.eot_id, *tokenizer.encode(t)] for t in texts])
        secret = losses[texts.index(canary.secret)]
        rank = 1 + int((losses < secret - 1e-4).sum())  # float32 sums: ties within 1e-4 nats left out
        got = listed[canary.name]
        assert got["method"] == "enumerated" and got["secret"] == canary.secret
        assert abs(got["rank"] - rank) <= int((np.abs(losses - secret) <= 1e-4).sum()), (got, rank)
        assert got["exposure"] == pytest.approx(math.log2(10**4) - math.log2(got["rank"]))
        assert final[f"canary/{canary.name}/rank"] == got["rank"]
        # The skew-normal fit to 255 sampled fillings, against the enumeration.
        sampled = unpadded_losses(model, [[corpus.eot_id, *tokenizer.encode(t)] for t in canary.candidates(255, 0)])
        fitted = exposure(skew_normal_rank(secret, sampled, 10**4), 10**4)
        print(f"{canary.name}: enumerated {got['exposure']:.2f} bits (rank {got['rank']}), skew-normal {fitted:.2f}")
        fits[canary.name] = (got["rank"], got["exposure"], fitted)
    # Measured here: `once` ranks 3,524 of 10^4 (1.50 bits enumerated, 1.72 fitted); `often` ranks 11 (9.83
    # bits enumerated, 7.15 fitted: in the far tail 255 samples under-state it, hence the enumeration).
    rank, enumerated, fitted = fits["once"]
    assert 100 <= rank <= 9_900 and abs(fitted - enumerated) < 1.0, fits  # mid-ranked: within a bit


@torch.no_grad()
def unpadded_losses(model, sequences: list[list[int]]) -> np.ndarray:
    """Each sequence's total loss, from batches of sequences of one length (no padding, no mask)."""
    out = np.zeros(len(sequences))
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(sequences):
        by_length.setdefault(len(ids), []).append(i)
    for rows in by_length.values():
        for chunk in np.array_split(rows, max(1, len(rows) // 512)):
            ids = torch.tensor([sequences[i] for i in chunk])  # [n, L]
            log_p = model(input_ids=ids).logits[:, :-1].double().log_softmax(-1)  # [n, L - 1, vocab]
            out[chunk] = -log_p.gather(-1, ids[:, 1:, None])[..., 0].sum(-1).numpy()
    return out
