"""The logits transforms (temperature, top-k, top-p) are transformers' warpers, with and without ties, and
keep what they promise on any scores (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from gptfit.core.sampling import apply_temperature, top_k_filter, top_p_filter
from gptfit.core.sampling.transforms import _sorted_top_p

VOCAB = 64

# ---------------------------------------------------------------------------------------------------
# The transforms are transformers' warpers.


def random_logits(seed, batch=4, vocab=VOCAB, scale=3.0):
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * scale


TIES = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 0.0, -1.0], [0.0] * 8, [5.0, 5.0, 1.0, 1.0, 1.0, -2.0, -2.0, -9.0]])
# log of exact dyadic probabilities: top-p boundaries fall exactly on a cumulative sum.
DYADIC = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.0625, 0.0625], [0.25, 0.25, 0.25, 0.125, 0.125]]))
WITH_INF = torch.tensor([[2.0, -math.inf, 1.0, 0.5, -math.inf, 0.0]])
CASES = [random_logits(s) for s in range(3)] + [TIES, DYADIC, WITH_INF]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("top_k, keep", [(1, 1), (2, 1), (3, 1), (5, 1), (2, 3), (100, 1)])
def test_top_k_equals_transformers(case, top_k, keep):
    logits = CASES[case]
    expected = TopKLogitsWarper(top_k, min_tokens_to_keep=keep)(None, logits.clone())
    torch.testing.assert_close(top_k_filter(logits, top_k, keep), expected, rtol=0, atol=0)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize(
    "top_p, keep", [(0.1, 1), (0.5, 1), (0.75, 1), (0.875, 1), (0.9, 1), (0.999, 1), (0.5, 3), (0.0, 1), (0.25, 2)]
)
def test_top_p_equals_transformers(case, top_p, keep):
    logits = CASES[case]
    expected = TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(None, logits.clone())
    torch.testing.assert_close(top_p_filter(logits, top_p, keep), expected, rtol=0, atol=0)


@pytest.mark.parametrize("vocab", [5, 64, 2048])
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.92, 0.999])
def test_top_p_of_peaked_rows_sorts_only_what_it_must_and_still_equals_transformers(vocab, top_p):
    # Rows whose top token holds from 30% to nearly all of the mass, some just around top_p: those
    # settled without a sort and the others must both be transformers' answer.
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(64, vocab, generator=gen)
    logits[:, 0] += torch.linspace(0.0, 20.0, 64)
    logits[:8] = (
        torch.log(
            torch.tensor([top_p + d for d in (-2e-3, -1e-4, 0, 1e-4, 2e-3, 1e-2, 5e-2, 0.0)]).clamp(1e-3, 0.9999)
        )[:, None]
        .expand(8, vocab)
        .clone()
    )
    logits[:8, 1:] = torch.log((1 - logits[:8, :1].exp()) / (vocab - 1))
    kept = top_p_filter(logits, top_p)
    torch.testing.assert_close(kept, _sorted_top_p(logits, top_p, 1, -math.inf), rtol=0, atol=0)
    # Transformers sorts unstably, so only the rows without tied scores (not the first 8) are its answer too.
    torch.testing.assert_close(kept[8:], TopPLogitsWarper(top_p)(None, logits[8:].clone()), rtol=0, atol=0)
    assert (kept > -math.inf).sum(-1)[-1] == 1  # the most peaked row keeps one token


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 1.3, 2.0])
def test_temperature_equals_transformers(case, temperature):
    logits = CASES[case]
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    torch.testing.assert_close(apply_temperature(logits, temperature), expected, rtol=0, atol=0)


def test_off_values_change_nothing_and_work_in_float32():
    logits = random_logits(7).half()
    assert top_k_filter(logits, 0).dtype == torch.float32
    torch.testing.assert_close(top_k_filter(logits, 0), logits.float(), rtol=0, atol=0)
    torch.testing.assert_close(top_p_filter(logits, 1.0), logits.float(), rtol=0, atol=0)
    torch.testing.assert_close(apply_temperature(logits, 1.0), logits.float(), rtol=0, atol=0)
    with pytest.raises(ValueError):
        apply_temperature(logits, 0.0)


def test_ties_at_the_top_k_boundary_are_kept():
    kept = torch.isfinite(top_k_filter(TIES, 2))
    assert kept[0].tolist() == [True, True, True, True, False, False, False, False]  # 3 and all three 2s
    assert kept[1].all()  # everything ties


scores_st = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=2, max_size=40)


@settings(max_examples=150, deadline=None)
@given(scores_st, st.integers(1, 50), st.floats(0.01, 1.0), st.floats(0.05, 5.0))
def test_the_argmax_always_survives(values, top_k, top_p, temperature):
    logits = torch.tensor([values])
    best = torch.isclose(logits, logits.max())[0]
    for out in (
        top_k_filter(logits, top_k),
        top_p_filter(logits, top_p),
        apply_temperature(logits, temperature),
        top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p),
    ):
        kept = torch.isfinite(out)[0]
        assert kept[best].any()  # a superset of (one of) the most probable tokens
    tied = (logits == logits.max())[0]  # exactly equal: top-k keeps every tie at its boundary
    assert torch.isfinite(top_k_filter(logits, top_k))[0][tied].all()


@settings(max_examples=150, deadline=None)
@given(scores_st, st.integers(1, 50), st.integers(1, 4))
def test_top_k_keeps_at_least_k_tokens(values, top_k, keep):
    logits = torch.tensor([values])
    kept = int(torch.isfinite(top_k_filter(logits, top_k, keep)).sum())
    k = min(max(top_k, keep), logits.shape[-1])
    assert kept >= k
    if len(set(values)) == len(values):
        assert kept == k  # without ties exactly k


@settings(max_examples=150, deadline=None)
@given(scores_st, st.floats(0.01, 0.99))
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(values, top_p):
    logits = torch.tensor([values])
    probs = torch.softmax(logits, -1)[0].double()
    kept = torch.isfinite(top_p_filter(logits, top_p))[0]
    mass = float(probs[kept].sum())
    assert mass >= top_p - 1e-5  # reaches p
    assert mass - float(probs[kept].min()) < top_p + 1e-5  # dropping the least probable kept token falls short
    if (~kept).any():
        assert float(probs[~kept].max()) <= float(probs[kept].min()) + 1e-7  # the most probable ones
