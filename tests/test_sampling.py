"""Decoding: gptfit's transforms are transformers' warpers, its loops pick the tokens `generate` picks, and
`python -m gptfit.sample` turns a run into completions, traces and figures (or one error line)."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
from transformers.utils import logging as hf_logging

from gptfit.core.sampling import (TransformProcessor, apply_temperature, as_setting, generate, generate_each, top_k_filter,
                                  top_p_filter)
from gptfit.core.sampling.steps import CachedSteps
from gptfit.core.sampling.transforms import _sorted_top_p
from gptfit.errors import UserError
from gptfit.model import GPTConfig, GPTForCausalLM
from tests.conftest import ROOT, run_cli

hf_logging.set_verbosity_error()  # generate's advice about pad tokens is noise here

VOCAB = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Decode on one thread: tiny models gain nothing from a second, and on a shared 2-core machine an
    OpenMP thread waiting for a busy core can make a step a hundred times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gptfit_model(block=48, seed=0):
    torch.manual_seed(seed)
    return GPTForCausalLM(GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, block_size=block)).eval()


def gpt2_model(block=48, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, n_positions=block, bos_token_id=0,
                        eos_token_id=1, pad_token_id=1)
    return GPT2LMHeadModel(config).eval()


MODELS = {"gptfit": gptfit_model, "gpt2": gpt2_model}


def prompts(batch=2, length=5, seed=1):
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def frequent_token(model, ids, step=3) -> int:
    """A token greedy decoding of the first prompt produces first at `step` (or later), to serve as
    end-of-text: a random model rarely ends by itself."""
    row = generate(model, ids[:1], dict(max_new_tokens=20), eos_token_id=[]).new_tokens[0].tolist()
    return next((t for i, t in enumerate(row) if i >= step and t not in row[:i]), row[step])


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
@pytest.mark.parametrize("top_p, keep", [(0.1, 1), (0.5, 1), (0.75, 1), (0.875, 1), (0.9, 1), (0.999, 1),
                                         (0.5, 3), (0.0, 1), (0.25, 2)])
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
    logits[:8] = torch.log(torch.tensor([top_p + d for d in (-2e-3, -1e-4, 0, 1e-4, 2e-3, 1e-2, 5e-2, 0.0)])
                           .clamp(1e-3, 0.9999))[:, None].expand(8, vocab).clone()
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
    for out in (top_k_filter(logits, top_k), top_p_filter(logits, top_p), apply_temperature(logits, temperature),
                top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)):
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


# ---------------------------------------------------------------------------------------------------
# The cache


def test_kv_cache_is_a_cache_for_the_model_and_reorders_beams():
    model = gptfit_model()
    ids = prompts(3, 8)
    full = model(ids).logits
    cache = model.new_kv_cache(3, capacity=8)
    first = model(ids[:, :5], cache=cache).logits
    rest = model(ids[:, 5:], cache=cache).logits
    assert cache.get_seq_length() == 8
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=1e-5, atol=1e-5)
    keys = [k[:, :, :8].clone() for k in cache.keys]
    order = torch.tensor([2, 0, 0])
    cache.reorder(order)
    for before, after in zip(keys, cache.keys):
        assert torch.equal(after[:, :, :8], before[order])
    cache.copy_row(0, 1)
    assert all(torch.equal(k[1, :, :8], k[0, :, :8]) for k in cache.keys + cache.values)
    with pytest.raises(ValueError):
        cache.update(torch.zeros(3, 2, 1, 16), torch.zeros(3, 2, 1, 16), 0)  # full


def test_the_decode_step_gives_the_models_logits_bit_for_bit():
    model = gptfit_model()
    ids = prompts(2, 9)
    steps = CachedSteps(model, model.config.block_size, 2, 9)
    with torch.inference_mode():
        got = [steps.prefill(ids[:, :6], None)] + [steps.step(ids[:, : t + 1], None) for t in range(6, 9)]
        ref_cache = model.new_kv_cache(2, 9)
        ref = [model(ids[:, :6], cache=ref_cache, logits_to_keep=1).logits[:, -1]]
        ref += [model(ids[:, t : t + 1], cache=ref_cache, logits_to_keep=1).logits[:, -1] for t in range(6, 9)]
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


class PatchedMLP(torch.nn.Module):
    """Another MLP for a block: the original one's output plus a fixed shift of the residual stream that
    depends on the input (what an adapter or a patch might do)."""

    def __init__(self, mlp: torch.nn.Module, width: int):
        super().__init__()
        self.inner = mlp
        self.extra = torch.nn.Linear(width, width, bias=False)
        torch.nn.init.normal_(self.extra.weight, std=2.0, generator=torch.Generator().manual_seed(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.extra(x)


@pytest.mark.parametrize("setting", [dict(max_new_tokens=12), dict(num_beams=3, max_new_tokens=12)])
def test_the_fast_path_follows_the_models_modules(setting):
    # Decoding runs the model's own modules: a block given another MLP decodes as `model.generate` does.
    model = gptfit_model()
    ids = prompts(2, 5)
    before = generate(model, ids, setting, eos_token_id=[]).sequences
    model.transformer.h[0].mlp = PatchedMLP(model.transformer.h[0].mlp, model.config.n_embd)
    ours = generate(model, ids, setting, eos_token_id=[])
    assert ours.backend == "cached"
    with torch.inference_mode():
        theirs = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, eos_token_id=None,
                                pad_token_id=0, **setting)
    assert torch.equal(ours.sequences, theirs)
    assert not torch.equal(ours.sequences, before)  # the patch changed what is decoded


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoding_switches_onednn_off_for_fp32_models_only_and_restores_it(dtype):
    # oneDNN's per-call cost dominates tiny decoding steps of fp32 models; bf16 matmuls need it.
    model = gptfit_model().to(dtype)
    seen = []
    model.transformer.h[0].register_forward_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    before = torch.backends.mkldnn.enabled
    generate(model, prompts(2, 5), dict(max_new_tokens=3), use_cache=False)
    assert seen and set(seen) == {dtype != torch.float32}
    assert torch.backends.mkldnn.enabled == before


# ---------------------------------------------------------------------------------------------------
# Greedy and beam search pick the tokens `generate` picks.

SEARCH = [
    dict(num_beams=1),
    dict(num_beams=3),
    dict(num_beams=3, length_penalty=2.0, early_stopping=True, num_return_sequences=2),
    dict(num_beams=4, length_penalty=-0.5, num_return_sequences=4),
    dict(num_beams=2, length_penalty=0.0, early_stopping=True),
]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("search", range(len(SEARCH)))
def test_search_equals_generate_token_for_token(kind, seed, search):
    model = MODELS[kind](seed=seed)
    ids = prompts(2, 4, seed=seed + 10)
    s = dict(SEARCH[search], max_new_tokens=12)
    eos_ids = [(ids, None), (ids, frequent_token(model, ids, step=2 + seed)), (ids[1:], frequent_token(model, ids[1:]))]
    for ids, eos in eos_ids:  # a single prompt too: there, an early end shortens the output
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, eos_token_id=eos,
                                  pad_token_id=1 if eos is None else eos, return_dict_in_generate=True,
                                  output_scores=True, **s)
        got = generate(model, ids, s, eos_token_id=[] if eos is None else eos)
        assert got.backend == ("cached" if kind == "gptfit" else "generate")
        assert torch.equal(got.sequences, expected.sequences), (eos, got.sequences, expected.sequences)
        if s["num_beams"] > 1:
            torch.testing.assert_close(got.scores, expected.sequences_scores)
        # gptfit's own loop, without the cache, agrees for every model.
        assert torch.equal(generate(model, ids, s, eos_token_id=eos or [], use_cache=False).sequences,
                           expected.sequences)


def test_end_of_text_stops_each_row_and_pads_it_and_min_new_tokens_holds_it_off():
    model = gptfit_model()
    ids = prompts(2, 4)
    eos = frequent_token(model, ids, step=2)
    out = generate(model, ids, dict(max_new_tokens=10), eos_token_id=eos)
    row = out.new_tokens[0].tolist()
    first = row.index(eos)
    assert first >= 2 and set(row[first:]) == {eos}  # ended, then padded with end-of-text
    held = generate(model, ids, dict(max_new_tokens=10), eos_token_id=eos, min_new_tokens=6).new_tokens
    assert eos not in held[:, :6].tolist()[0] + held[:, :6].tolist()[1]
    assert held.shape[1] >= 6


# ---------------------------------------------------------------------------------------------------
# Sampling


SAMPLED = [
    dict(do_sample=True),
    dict(do_sample=True, temperature=0.7),
    dict(do_sample=True, temperature=1.3, top_k=6),
    dict(do_sample=True, top_p=0.92),
    dict(do_sample=True, temperature=0.9, top_k=10, top_p=0.8, num_return_sequences=3),
]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("sampled", range(len(SAMPLED)))
def test_sampling_is_seeded_and_matches_generate_with_the_same_seed(kind, sampled):
    model = MODELS[kind]()
    ids = prompts(2, 4)
    s = as_setting(dict(SAMPLED[sampled], max_new_tokens=16))
    first = generate(model, ids, s, seed=5, eos_token_id=[])
    assert torch.equal(first.sequences, generate(model, ids, s, seed=5, eos_token_id=[]).sequences)
    assert not torch.equal(first.sequences, generate(model, ids, s, seed=6, eos_token_id=[]).sequences)
    # generate draws from the global RNG; seeded the same, with gptfit's transforms, it draws the same tokens.
    torch.manual_seed(5)
    expected = model.generate(ids.repeat_interleave(s.num_return_sequences, 0), do_sample=True, top_k=0, top_p=1.0,
                              temperature=1.0, max_new_tokens=16, eos_token_id=None, pad_token_id=1,
                              logits_processor=LogitsProcessorList([TransformProcessor(s)]))
    assert torch.equal(first.sequences, expected)


@pytest.mark.parametrize("kind", MODELS)
def test_every_setting_decoded_at_once_is_each_setting_decoded_alone(kind):
    # gptfit's GPT decodes the greedy and sampled settings as blocks of one batch; GPT-2 one at a time.
    # Left padding and an end-of-text that ends rows at different steps, in some blocks only.
    model = MODELS[kind]()
    ids = prompts(3, 6)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    # End-of-text: the third greedy token of every row, so that every greedy row ends there.
    eos = generate(model, ids, dict(max_new_tokens=3), attention_mask=mask, eos_token_id=[]).new_tokens[:, 2].tolist()
    settings = {"greedy": dict(max_new_tokens=12), "beam": dict(num_beams=2, max_new_tokens=12),
                **{f"sampled_{i}": dict(s, max_new_tokens=12) for i, s in enumerate(SAMPLED)},
                "short": dict(do_sample=True, top_k=6, max_new_tokens=4)}
    together = generate_each(model, ids, settings, attention_mask=mask, seed=5, eos_token_id=eos)
    assert list(together) == list(settings)
    ended = 0
    for name, s in settings.items():
        alone = generate(model, ids, s, attention_mask=mask, seed=5, eos_token_id=eos)
        assert torch.equal(together[name].sequences, alone.sequences), name
        assert together[name].strategy == alone.strategy and together[name].backend == alone.backend
        ended += int(together[name].sequences.shape[1] < ids.shape[1] + s["max_new_tokens"])
    assert ended >= 1  # some setting stopped early, its rows all ended


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("setting", [dict(do_sample=True, top_k=6), dict(do_sample=True, num_beams=2)])
def test_decoding_leaves_the_global_rng_alone(kind, setting):
    model = MODELS[kind]()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    generate(model, prompts(), dict(setting, max_new_tokens=6), seed=1)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", MODELS)
def test_temperature_zero_and_top_k_one_are_greedy(kind):
    model = MODELS[kind]()
    ids = prompts()
    greedy = generate(model, ids, dict(max_new_tokens=10), eos_token_id=[]).sequences
    for s in (dict(do_sample=True, temperature=0.0), dict(do_sample=True, top_k=1)):
        out = generate(model, ids, dict(s, max_new_tokens=10), seed=3, eos_token_id=[])
        assert torch.equal(out.sequences, greedy)
    assert generate(model, ids, dict(do_sample=True, temperature=0.0, max_new_tokens=2)).strategy == "greedy"


def test_beam_sampling_is_seeded():
    model = gptfit_model()
    s = dict(do_sample=True, num_beams=3, temperature=1.5, max_new_tokens=8, num_return_sequences=2)
    a = generate(model, prompts(), s, seed=1, eos_token_id=[])
    assert a.strategy == "beam_sample" and a.sequences.shape == (4, 13)
    assert torch.equal(a.sequences, generate(model, prompts(), s, seed=1, eos_token_id=[]).sequences)


# ---------------------------------------------------------------------------------------------------
# Batches of unequal prompts and the model's context


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("setting", [dict(max_new_tokens=8), dict(max_new_tokens=8, num_beams=3),
                                     dict(max_new_tokens=40), dict(max_new_tokens=40, num_beams=2)])
def test_left_padded_prompts_decode_as_if_alone(kind, setting):
    model = MODELS[kind](block=16)
    a, b = prompts(1, 6, seed=3), prompts(1, 3, seed=4)
    ids = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    both = generate(model, ids, setting, attention_mask=mask, eos_token_id=[])
    assert torch.equal(both.new_tokens[0], generate(model, a, setting, eos_token_id=[]).new_tokens[0])
    assert torch.equal(both.new_tokens[1], generate(model, b, setting, eos_token_id=[]).new_tokens[0])


def naive_sliding_greedy(model, ids, new, context):
    """The definition of the context behaviour: each next token from the last `context` tokens, no cache."""
    for _ in range(new):
        logits = model(input_ids=ids[:, -context:]).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    return ids


@pytest.mark.parametrize("kind", MODELS)
def test_decoding_past_the_context_slides_the_window_and_never_crashes(kind):
    model = MODELS[kind](block=16)
    long_prompt = prompts(2, 20)  # longer than the context itself
    with torch.no_grad():
        for ids in (prompts(2, 10), long_prompt):
            out = generate(model, ids, dict(max_new_tokens=30), eos_token_id=[])
            assert out.sequences.shape == (2, ids.shape[1] + 30)
            assert torch.equal(out.sequences, naive_sliding_greedy(model, ids, 30, 16))
        beams = generate(model, long_prompt, dict(max_new_tokens=25, num_beams=3, num_return_sequences=2),
                         eos_token_id=[])
        assert beams.sequences.shape == (4, 45)
    assert out.backend == ("cached" if kind == "gptfit" else "window")


# ---------------------------------------------------------------------------------------------------
# Traces and results


@pytest.mark.parametrize("kind", MODELS)
def test_greedy_trace_shows_the_most_probable_token_taken(kind):
    model = MODELS[kind]()
    out = generate(model, prompts(), dict(max_new_tokens=7), eos_token_id=[], trace=True, trace_top=4)
    assert len(out.steps) == 7 and out.new_tokens.shape == (2, 7)
    for t, step in enumerate(out.steps):
        assert step.index == t and step.top_ids.shape == (2, 4)
        assert torch.equal(step.token_ids, out.new_tokens[:, t])
        assert torch.equal(step.top_ids[:, 0], step.token_ids)  # greedy takes the most probable
        assert (step.top_probs[:, :-1] >= step.top_probs[:, 1:]).all()
        assert (step.top_probs.sum(-1) <= 1 + 1e-5).all() and (step.top_probs > 0).all()


def test_sampling_trace_shows_the_distribution_after_the_transforms():
    out = generate(gptfit_model(), prompts(), dict(do_sample=True, top_k=3, max_new_tokens=6), trace=True,
                   trace_top=5, eos_token_id=[])
    for t, step in enumerate(out.steps):
        assert (step.top_probs[:, 3:] == 0).all()  # top-k=3: two of the five candidates are gone
        torch.testing.assert_close(step.top_probs[:, :3].sum(-1), torch.ones(2))
        assert all(int(tok) in row.tolist() for tok, row in zip(out.new_tokens[:, t], step.top_ids[:, :3]))


@pytest.mark.parametrize("kind", MODELS)
def test_beam_trace_holds_a_tree_that_leads_to_the_result(kind):
    model = MODELS[kind]()
    out = generate(model, prompts(1, 4), dict(num_beams=3, max_new_tokens=6), eos_token_id=[], trace=True)
    assert out.backend == ("cached" if kind == "gptfit" else "window")  # generate does not show its beams
    assert len(out.steps) == 6
    assert (out.steps[0].parents == 0).all()  # every first beam extends the prompt
    paths = [[]] * 3
    for step in out.steps:
        assert step.parents.shape == step.token_ids.shape == step.scores.shape == (1, 3)
        assert ((step.parents >= 0) & (step.parents < 3)).all()
        assert (step.scores[0, :-1] >= step.scores[0, 1:]).all()  # best beam first
        paths = [paths[p] + [t] for p, t in zip(step.parents[0].tolist(), step.token_ids[0].tolist())]
    assert out.new_tokens[0].tolist() in paths


def test_result_says_what_was_done():
    out = generate(gptfit_model(), prompts(), dict(num_beams=2, max_new_tokens=3), seed=4)
    assert (out.strategy, out.backend, out.seed, out.prompt_length) == ("beam", "cached", 4, 5)
    assert out.setting["num_beams"] == 2 and out.scores.shape == (2,)
    assert torch.equal(out.new_tokens, out.sequences[:, 5:])


@pytest.mark.parametrize("bad, message", [
    (dict(top_p=1.5), "decoding.top_p=1.5"),
    (dict(top_k=-1), "decoding.top_k=-1"),
    (dict(temperature="hot"), "decoding.temperature='hot': must be a float"),
    (dict(num_beams=2, num_return_sequences=3), "must be <= num_beams=2"),
    (dict(beams=2), "decoding.beams: unknown key"),
])
def test_bad_settings_are_user_errors(bad, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate(gptfit_model(), prompts(), bad)


# ---------------------------------------------------------------------------------------------------
# The command line

TEXTS = ["The cat sat on the mat.", "A dog barked at the cat.", "The mat was red and the dog was brown."] * 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    """A run directory with a tiny model and its tokenizer in final/, as a finished training run leaves it."""
    from gptfit.data.tokenizer import train_bpe

    tokenizer = train_bpe(TEXTS, 300, cache_dir)
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=len(tokenizer), n_layer=2, n_head=2, n_embd=32, block_size=32,
                                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))
    run = tmp_path_factory.mktemp("run")
    model.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    return run


def sample_main(args: list[str]) -> None:
    """`python -m gptfit.sample <args>`, in this process (Hydra reads sys.argv)."""
    from gptfit.cli import hydra_main
    from gptfit.sample import main

    argv = sys.argv
    sys.argv = ["gptfit.sample", *args]
    try:
        hydra_main(main)()
    finally:
        sys.argv = argv


def test_sample_command_end_to_end(run_dir, tmp_path):
    result = run_cli(f"run={run_dir}", "decoding=all", "prompt=The cat", "trace=true", "max_new_tokens=6",
                     "decoding.beam.num_beams=2", "threads=1", module="gptfit.sample", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("greedy", "beam", "temp_low", "temp_high", "top_k", "top_p", "sample"):
        assert f"\n{name} (" in out  # one row per setting
        assert f"[{name}] step by step" in out
    assert "step   6: took" in out and "beam 1 <- " in out
    for figure in ("next_token_transforms.png", "greedy_path.png", "beam_tree.png"):
        assert (run_dir / "samples" / figure).stat().st_size > 1000
    assert "Traceback" not in result.stderr
    assert not (ROOT / ".hydra").exists() and not list(ROOT.glob("*.log"))  # Hydra wrote nothing


def test_sample_command_writes_figures_where_asked(run_dir, tmp_path, capsys):
    sample_main([f"run={run_dir}", "decoding=[top_p,sample]", "max_new_tokens=3", f"out={tmp_path / 'figs'}",
                 "seed=2"])
    out = capsys.readouterr().out
    assert "top_p (sample)" in out and "seed: 2" in out and "prompt: end-of-text" in out
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["greedy_path.png", "next_token_transforms.png"]


def test_sample_command_prints_its_composed_config(run_dir):
    result = run_cli(f"run={run_dir}", "decoding=[greedy,beam]", "decoding.beam.num_beams=5", "--cfg", "job",
                     module="gptfit.sample")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert list(cfg["decoding"]) == ["greedy", "beam"] and cfg["decoding"]["beam"]["num_beams"] == 5
    assert cfg["run"] == str(run_dir) and cfg["saved"] == "final"


BAD_ARGS = [
    (["run=/no/such/run"], "run='/no/such/run': no such run directory"),
    (["prompt=x"], "run=<run dir> is required"),
    (["run={run}", "prompt="], "prompt is empty"),
    (["run={run}", "decoding=nucleus"], "Could not find 'decoding/nucleus'"),
    (["run={run}", "max_new_tokens=0"], "max_new_tokens=0: must be >= 1"),
    (["run={run}", "decoding.top_p.top_p=1.5"], "decoding.top_p.top_p=1.5: must be in (0, 1]"),
    (["run={run}", "decoding=greedy", "decoding.beam.num_beams=2"], "decoding.beam.num_beams"),
    (["run={run}", "decoding.beam.num_beams=two"], "decoding.beam.num_beams"),
    (["run={run}", "saved=worst"], "saved='worst': one of final, best"),
    (["run={run}", "saved=best"], "no saved model in best/"),
    (["run={run}", "temperature=2"], "temperature"),
    (["run={run}", "trace"], "trace"),
    (["run={run}", "trace=maybe"], "maybe"),
]


@pytest.mark.parametrize("args, message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_sample_command_bad_input_is_one_line(args, message, run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample_main([a.format(run=run_dir) for a in args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_sample_command_bad_input_as_a_user_meets_it():
    result = run_cli("run=/no/such/run", module="gptfit.sample")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: run='/no/such/run': no such run directory"
    result = run_cli("run=/tmp", "temprature=2", module="gptfit.sample")  # a typo: an unknown key
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "temprature" in result.stderr
