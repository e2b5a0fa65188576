"""Membership inference as a specification: every score is its paper's formula, the ROC figures are
scikit-learn's and agree with a brute-force sweep, a memorizing model's members score higher, and the
blind baseline finds no shift where members and non-members were assigned at random."""

from __future__ import annotations

import json
import math
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gptfit.data.corpus import load_corpus
from gptfit.measures.table import SequenceTable
from gptfit.metrics import membership
from gptfit.metrics.population import held_out_population
from gptfit.metrics.scoring import score_sequences
from gptfit.model.loading import load_model
from gptfit.run.training import make_evaluator
from tests.conftest import TINY, error_lines, run_cli
from tests.roc import roc_auc, tpr_at_fpr

VOCAB = 40


class Bigram(nn.Module):
    """Random logits that depend on the current token: every distribution can be written out by hand."""

    def __init__(self, seed: int, scale: float = 4.0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(scale * torch.randn(VOCAB, VOCAB, generator=generator))

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.table[input_ids])


def by_formula(model: Bigram, seq: list[int]) -> tuple[list[float], list[float], list[float]]:
    """Per target: log p(x_t), mu_t and sigma_t, one float64 sum at a time, from the definitions."""
    table = model.table.detach().double().numpy()
    log_probs, mus, sigmas = [], [], []
    for current, target in zip(seq, seq[1:]):
        z = table[current]
        log_p = z - (z.max() + math.log(np.exp(z - z.max()).sum()))
        p = np.exp(log_p)
        mu = sum(p[v] * log_p[v] for v in range(VOCAB))
        second = sum(p[v] * log_p[v] ** 2 for v in range(VOCAB))
        log_probs.append(log_p[target])
        mus.append(mu)
        sigmas.append(math.sqrt(second - mu**2))
    return log_probs, mus, sigmas


def lowest_mean(values: list[float], k: float) -> float:
    count = max(1, int(k * len(values)))
    return float(np.mean(sorted(values)[:count]))


@pytest.mark.parametrize("k", [0.2, 0.5, 1.0])
def test_every_score_is_its_formula_on_random_logits(k):
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, VOCAB, (12, 25))
    target, ref = Bigram(1), Bigram(2)
    texts = ["".join(chr(97 + t % 26) for t in row) for row in seqs]
    tokens = torch.from_numpy(seqs)
    scores = membership.model_scores(
        score_sequences(target, tokens, 5, moments=True), texts, k, -score_sequences(ref, tokens, 5).losses.numpy()
    )
    for i, seq in enumerate(seqs.tolist()):
        log_probs, mus, sigmas = by_formula(target, seq)
        ref_log_probs, _, _ = by_formula(ref, seq)
        mean = float(np.mean(log_probs))
        z = [(lp - mu) / sigma for lp, mu, sigma in zip(log_probs, mus, sigmas)]
        expected = {
            "mia_loss": mean,
            "mia_zlib": mean / len(zlib.compress(texts[i].encode("utf-8"))),
            "mia_min_k": lowest_mean(log_probs, k),
            "mia_min_k_plus_plus": lowest_mean(z, k),
            "mia_reference": mean - float(np.mean(ref_log_probs)),
        }
        for name, value in expected.items():
            assert scores[name][i] == pytest.approx(value, rel=1e-5, abs=1e-5), (name, i)


def test_min_k_plus_plus_needs_float64():
    # Peaked distributions: sigma is small, and float32 moments would move the score by percents.
    model = Bigram(3, scale=12.0)
    seqs = torch.from_numpy(np.random.default_rng(1).integers(0, VOCAB, (8, 30)))
    scores = score_sequences(model, seqs, 8, moments=True)
    assert scores.mu.dtype == scores.sigma.dtype == scores.losses.dtype == torch.float64
    for i, seq in enumerate(seqs.tolist()):
        _, mus, sigmas = by_formula(model, seq)
        assert np.allclose(scores.mu[i].numpy(), mus, rtol=1e-9) and np.allclose(
            scores.sigma[i].numpy(), sigmas, rtol=1e-7
        )


def brute_force_tpr(members: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Every threshold in turn: predict "member" at or above it; the best TPR whose FPR is at most fpr."""
    pos, neg = scores[members], scores[~members]
    best = 0.0
    for t in [np.inf, *np.unique(scores)]:
        if np.mean(neg >= t) <= fpr:
            best = max(best, float(np.mean(pos >= t)))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_tpr_at_a_false_positive_rate_agrees_with_a_brute_force_sweep(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    members = rng.random(n) < 0.5
    scores = np.round(rng.normal(size=n) + 0.8 * members, 1)  # rounded: many ties
    for fpr in (0.001, 0.01, 0.1, 0.5):
        assert tpr_at_fpr(members, scores, fpr) == brute_force_tpr(members, scores, fpr)


def test_roc_auc_matches_counting_pairs_with_ties():
    rng = np.random.default_rng(2)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    members = np.r_[np.ones(40, bool), np.zeros(30, bool)]
    assert roc_auc(members, np.r_[pos, neg]) == pytest.approx(np.mean(pairs))


def test_a_rate_below_ten_false_positives_is_null_and_says_why():
    members = np.r_[np.ones(1500, bool), np.zeros(1500, bool)]
    scores = np.random.default_rng(0).normal(size=3000) + members
    figures = membership.separation(members, scores)
    assert figures["tpr@1%fpr"] is not None and figures["tpr@0.1%fpr"] is None  # 1,500 < 10,000 non-members
    assert set(membership.unestimable(1500)) == {"tpr@0.1%fpr"}
    assert "10000" in membership.unestimable(1500)["tpr@0.1%fpr"]


@pytest.mark.parametrize("seed", range(3))
def test_the_bootstraps_batched_roc_is_scikit_learns_on_every_draw(seed):
    # Tied scores, zero weights (documents not drawn) and 12,000 non-members, so that both TPRs count.
    rng = np.random.default_rng(seed)
    n = 24_000
    members = rng.random(n) < 0.5
    scores = np.round(rng.normal(size=n) + members, 2)
    weights = rng.integers(0, 3, (6, n)).astype(np.float64)
    batched = membership.resampled_separation(members, scores, weights)
    assert set(batched) == {"auc", "tpr@1%fpr", "tpr@0.1%fpr"}
    for draw in range(len(weights)):
        for key, value in membership.separation(members, scores, weights[draw]).items():
            assert batched[key][draw] == pytest.approx(value, abs=1e-12)


def test_the_bootstrap_interval_holds_the_estimate_and_narrows_with_more_documents():
    rng = np.random.default_rng(0)
    widths = []
    for n_docs in (20, 400):
        documents = np.repeat(np.arange(n_docs), 10)
        members = documents % 2 == 0
        scores = rng.normal(size=len(documents)) + 0.5 * members
        auc = roc_auc(members, scores)
        lo, hi = membership.bootstrap(members, scores, documents, 200, seed=0)["auc"]
        assert lo <= auc <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_the_blind_baseline_finds_a_shift_when_there_is_one():
    # Members drawn from the low half of the vocabulary, non-members from all of it: n-grams give it away.
    rng = np.random.default_rng(0)
    members = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    tokens = np.where(members[:, None], rng.integers(0, 50, (400, 16)), rng.integers(0, 100, (400, 16)))
    scores = membership.blind(tokens, members, np.arange(400) // 4, seed=0)
    assert roc_auc(members, scores) > 0.9


@pytest.mark.slow
def test_the_blind_baseline_is_near_chance_on_a_corpus_of_many_documents(make_config, tmp_path):
    # Short lines, each its own document, split at random: no shift between members and non-members.
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, rng.integers(4, 12))) for _ in range(6000)) + "\n")
    cfg = make_config(
        [
            *TINY,
            "data=text",
            f"data.path={path}",
            "data.sample_by=line",
            "data.train_tokens=40000",
            "eval.sequences=1000",
            "decoding=none",
        ]
    )
    corpus = load_corpus(cfg.data)
    train, val = make_evaluator(cfg, corpus).measure_of(SequenceTable).sides[:2]
    assert len(train.offsets) == len(val.offsets) >= 600
    members = np.r_[np.ones(len(train.blind), bool), np.zeros(len(val.blind), bool)]
    assert abs(roc_auc(members, np.r_[train.blind, val.blind]) - 0.5) <= 0.1


@pytest.mark.slow
def test_an_untrained_model_leaks_nothing_by_loss(make_config):
    cfg = make_config([*TINY, "data.train_tokens=16384", "eval.sequences=256"])
    corpus = load_corpus(cfg.data)
    torch.manual_seed(0)
    from gptfit.model.loading import build_model

    row, _ = make_evaluator(cfg, corpus).table_only(build_model(cfg.model, corpus.tokenizer), 0, None, final=False)
    for name in ("loss", "min_k", "min_k_plus_plus"):
        assert 0.4 <= row[f"mia/{name}/auc"] <= 0.6, name


# -- on tiny_corpus's memorizing model -------------------------------------------------------------------


def test_tiny_corpus_reports_every_score_and_its_model_memorizes(tiny_corpus_run):
    final = json.loads((tiny_corpus_run / "summary.json").read_text())["final"]
    for name in ("loss", "zlib", "min_k", "min_k_plus_plus", "blind"):
        for figure in ("auc", "tpr@1%fpr", "tpr@0.1%fpr"):
            for suffix in ("", "_lo", "_hi"):
                assert f"mia/{name}/{figure}{suffix}" in final
    for name in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        assert final[f"mia/{name}/auc"] >= 0.9, name
        assert final[f"mia/{name}/auc_lo"] <= final[f"mia/{name}/auc"] <= final[f"mia/{name}/auc_hi"]
    assert final["mia/blind/auc_lo"] <= 0.5 <= final["mia/blind/auc_hi"]
    assert final["mem/mia_auc"] == final["mia/loss/auc"]
    assert (tiny_corpus_run / "mia_roc.png").stat().st_size > 10_000


def test_members_score_higher_than_non_members_on_the_memorizing_model(tiny_corpus_run):
    table = pd.read_parquet(tiny_corpus_run / "sequences.parquet")
    last = table[(table.step == table.step.max()) & (table.kind == "sample")]
    for name in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        members, others = last[last.split == "train"][f"mia_{name}"], last[last.split == "val"][f"mia_{name}"]
        assert members.median() > others.median(), name
    assert np.allclose(last["mia_loss"], -last["loss"], atol=1e-6)  # the same forward pass, float64 vs float32


@pytest.mark.slow
def test_a_reference_model_scores_the_same_tokens(tiny_run, make_config, tmp_path):
    from gptfit.run.training import train

    reference_dir, _ = tiny_run
    run_dir = tmp_path / "target"
    train(make_config([*TINY, "seed=7", "train.max_steps=10", f"eval.mia.reference={reference_dir}"], run_dir))
    table = pd.read_parquet(run_dir / "sequences.parquet")
    last = table[table.step == table.step.max()]
    reference = load_model(str(reference_dir / "final"))
    tokens = torch.tensor(np.stack(last["tokens"].to_numpy()))
    ref_loss = -score_sequences(reference, tokens, 16).mean().numpy()
    assert np.allclose(last["mia_reference"], last["mia_loss"] - ref_loss, atol=1e-9)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "mia/reference/auc" in summary["final"] and summary["mia_reference_model"] == str(reference_dir)
    # RMIA against the held-out population outside the table, offline (one reference, trained on other text):
    # each sequence's share of population samples it dominates, counted pair by pair.
    cfg = make_config(TINY)
    corpus = load_corpus(cfg.data)
    target = load_model(str(run_dir / "final"))
    val = last[(last.kind == "sample") & (last.split == "val")]
    vocab = len(corpus.tokenizer)
    population = held_out_population(
        corpus.val, tokens.shape[1], val["offset"].to_numpy(), 256, vocab, reference, 16, 32
    )
    table_rows = {tuple(r) for r in val["tokens"]}
    assert len(population.tokens) > 10 and not {tuple(r) for r in population.tokens.tolist()} & table_rows
    p_z = np.exp(-score_sequences(target, population.tokens, 16).mean().numpy())
    ratio_z = p_z / membership.offline(population.reference_p, membership.RMIA_A)
    ratio_x = np.exp(last["mia_loss"].to_numpy()) / membership.offline(np.exp(ref_loss), membership.RMIA_A)
    pairwise = (ratio_x[:, None] / ratio_z[None, :] > membership.RMIA_GAMMA).mean(1)  # [n, m] grid, then shares
    assert np.allclose(last["mia_rmia"], pairwise, atol=1e-12) and "mia/rmia/auc" in summary["final"]
    # DC-PDD: each predicted token's first occurrence, min(p log(1/f), 0.01), f from the held-out stream.
    counts = np.bincount(corpus.val, minlength=vocab)
    log_inv = -np.log((counts + 1) / (len(corpus.val) + vocab))
    row = last.iloc[0]
    ids = list(row["tokens"])
    log_p = -score_sequences(target, torch.tensor([ids]), 1).losses[0].numpy()
    seen, terms = set(), []
    for t, lp in zip(ids[1:], log_p):
        if t not in seen:
            seen.add(t)
            terms.append(min(math.exp(lp) * log_inv[t], 0.01))
    assert row["mia_dc_pdd"] == pytest.approx(np.mean(terms), rel=1e-9)
    # ReCaLL: the same tokens after 32 held-out tokens outside the table (48 - 16 that the context leaves).
    joined = torch.tensor([population.recall_prefix.tolist() + ids])
    with torch.no_grad():
        after = target(input_ids=joined).logits[0, :-1].double().log_softmax(-1)  # [32 + 16 - 1, vocab]
    conditioned = after.gather(-1, joined[0, 1:, None])[32:, 0].numpy()  # the 15 predictions of ids[1:]
    assert row["mia_recall"] == pytest.approx(conditioned.mean() / log_p.mean(), rel=1e-6)
    assert "mia/recall/auc" in summary["final"]
    # Memorized bits against the reference (Morris et al.): the log2 gain over it, never below 0, and its mean.
    gain = (last["mia_loss"] - ref_loss) * (tokens.shape[1] - 1) / math.log(2)
    assert np.allclose(last["mem_bits"], np.maximum(gain, 0.0), atol=1e-6)
    rows = last[(last.kind == "sample") & (last.split == "train")]
    assert summary["final"]["mem/mem_bits_train"] == pytest.approx(rows["mem_bits"].mean())
    # The training set's information as the reference knows it: its loss on the stream, in bits.
    train_ids, block = load_corpus(cfg.data).train, cfg.model.block_size
    windows = torch.from_numpy(train_ids[: len(train_ids) // block * block].reshape(-1, block))
    with torch.no_grad():
        nats = reference(input_ids=windows, labels=windows).loss.item()
    assert summary["capacity/dataset_bits"] == pytest.approx(nats / math.log(2) * len(train_ids), rel=1e-4)


@pytest.mark.parametrize("override, says", [("eval.mia.k=0", "eval.mia.k=0"), ("eval.mia.k=1.5", "eval.mia.k=1.5")])
def test_a_min_k_share_outside_zero_one_is_one_line(override, says, tmp_path):
    result = run_cli(*TINY, override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and says in lines[0] and "(0, 1]" in lines[0]


@pytest.mark.slow
def test_a_reference_with_another_tokenizer_is_one_line(tiny_run, cache_dir, tmp_path):
    reference_dir, _ = tiny_run
    result = run_cli(
        *TINY,
        "data.vocab_size=600",
        f"data.cache_dir={cache_dir}",
        f"eval.mia.reference={reference_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "eval.mia.reference" in lines[0] and "tokenizer" in lines[0]


def test_a_later_slice_of_the_pool_shares_the_tokenizer_and_none_of_the_text(make_config):
    target = load_corpus(make_config([*TINY, "data.train_tokens=4096"]).data)
    reference = load_corpus(make_config([*TINY, "data.train_tokens=4096", "data.train_offset=4096"]).data)
    whole = load_corpus(make_config([*TINY, "data.train_tokens=8192"]).data)
    assert reference.tokenizer_hash == target.tokenizer_hash
    assert np.array_equal(np.concatenate([target.train, reference.train]), whole.train)
    assert reference.train_documents and set(reference.train_documents) <= set(whole.train_documents)
    assert not set(reference.train_documents) & set(target.train_documents)


def test_intervals_resample_documents_only_where_each_side_has_twenty():
    members = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    many = np.r_[np.arange(60) // 3, 100 + np.arange(60) // 3]  # 20 documents a side
    few = np.r_[np.arange(60) // 6, 100 + np.arange(60) // 3]  # 10 member documents
    record, units = membership.resampling_unit(members, many.astype(str))
    assert record == {
        "unit": "document",
        "train_units": 20,
        "val_units": 20,
        "train_documents": 20,
        "val_documents": 20,
    }
    assert len(np.unique(units)) == 40
    record, units = membership.resampling_unit(members, few.astype(str))
    assert record == {
        "unit": "sequence",
        "train_units": 60,
        "val_units": 60,
        "train_documents": 10,
        "val_documents": 20,
    }
    assert len(np.unique(units)) == 120


def test_the_auc_p_value_is_small_for_a_real_separation_and_uniform_under_the_null():
    rng = np.random.default_rng(1)
    members = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    units = np.arange(200).astype(str)
    separated = rng.normal(size=200) + 1.0 * members
    assert membership.permutation_p(members, separated, units, 999, seed=0) == pytest.approx(1 / 1000)
    # Scores unrelated to membership: over many draws, p is below 0.05 about 5% of the time.
    nulls = [membership.permutation_p(members, rng.normal(size=200), units, 199, seed=s) for s in range(200)]
    assert 0.01 <= np.mean(np.array(nulls) <= 0.05) <= 0.10 and 0.4 < np.mean(nulls) < 0.6
    # Documents as the unit: a document's sequences move together, so a shared document effect is no signal.
    documents = np.repeat(np.arange(20), 10).astype(str)
    members = np.repeat(np.arange(20) % 2 == 0, 10)
    effect = np.repeat(rng.normal(size=20), 10)  # each document's own level, unrelated to membership
    by_document = membership.permutation_p(members, effect + 0.01 * rng.normal(size=200), documents, 999, seed=0)
    by_sequence = membership.permutation_p(
        members, effect + 0.01 * rng.normal(size=200), np.arange(200).astype(str), 999, 0
    )
    assert by_document > by_sequence
