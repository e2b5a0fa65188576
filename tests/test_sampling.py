"""Decoding: gptfit's loops pick the tokens `generate` picks, greedy, by beam search and sampled, with padding,
end-of-text, past the context, and with their traces (the transforms: test_transforms.py; the command:
test_sample_command.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.utils import logging as hf_logging

from gptfit.core.sampling import TransformProcessor, as_setting, generate, generate_each
from gptfit.core.sampling.steps import CachedSteps
from gptfit.errors import UserError
from gptfit.model import GPTConfig, GPTForCausalLM

pytestmark = pytest.mark.usefixtures("one_thread")
hf_logging.set_verbosity_error()  # generate's advice about pad tokens is noise here

VOCAB = 64


def gptfit_model(block=48, seed=0):
    torch.manual_seed(seed)
    return GPTForCausalLM(GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, block_size=block)).eval()


def gpt2_model(block=48, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=block,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
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
        theirs = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, eos_token_id=None, pad_token_id=0, **setting
        )
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
        expected = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=1 if eos is None else eos,
            return_dict_in_generate=True,
            output_scores=True,
            **s,
        )
        got = generate(model, ids, s, eos_token_id=[] if eos is None else eos)
        assert got.backend == ("cached" if kind == "gptfit" else "generate")
        assert torch.equal(got.sequences, expected.sequences), (eos, got.sequences, expected.sequences)
        if s["num_beams"] > 1:
            torch.testing.assert_close(got.scores, expected.sequences_scores)
        # gptfit's own loop, without the cache, agrees for every model.
        assert torch.equal(
            generate(model, ids, s, eos_token_id=eos or [], use_cache=False).sequences, expected.sequences
        )


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
    expected = model.generate(
        ids.repeat_interleave(s.num_return_sequences, 0),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=16,
        eos_token_id=None,
        pad_token_id=1,
        logits_processor=LogitsProcessorList([TransformProcessor(s)]),
    )
    assert torch.equal(first.sequences, expected)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("rows_at_once", [None, 7])  # 7: the settings split over several batches
def test_every_setting_decoded_at_once_is_each_setting_decoded_alone(kind, rows_at_once):
    # gptfit's GPT decodes the greedy and sampled settings as blocks of one batch; GPT-2 one at a time.
    # Left padding and an end-of-text that ends rows at different steps, in some blocks only.
    model = MODELS[kind]()
    ids = prompts(3, 6)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    # End-of-text: the third greedy token of every row, so that every greedy row ends there.
    eos = generate(model, ids, dict(max_new_tokens=3), attention_mask=mask, eos_token_id=[]).new_tokens[:, 2].tolist()
    settings = {
        "greedy": dict(max_new_tokens=12),
        "beam": dict(num_beams=2, max_new_tokens=12),
        **{f"sampled_{i}": dict(s, max_new_tokens=12) for i, s in enumerate(SAMPLED)},
        "short": dict(do_sample=True, top_k=6, max_new_tokens=4),
    }
    together = generate_each(
        model, ids, settings, attention_mask=mask, seed=5, eos_token_id=eos, rows_at_once=rows_at_once
    )
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
@pytest.mark.parametrize(
    "setting",
    [
        dict(max_new_tokens=8),
        dict(max_new_tokens=8, num_beams=3),
        dict(max_new_tokens=40),
        dict(max_new_tokens=40, num_beams=2),
    ],
)
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
        beams = generate(
            model, long_prompt, dict(max_new_tokens=25, num_beams=3, num_return_sequences=2), eos_token_id=[]
        )
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
    out = generate(
        gptfit_model(),
        prompts(),
        dict(do_sample=True, top_k=3, max_new_tokens=6),
        trace=True,
        trace_top=5,
        eos_token_id=[],
    )
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


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(top_p=1.5), "decoding.top_p=1.5"),
        (dict(top_k=-1), "decoding.top_k=-1"),
        (dict(temperature="hot"), "decoding.temperature='hot': must be a float"),
        (dict(num_beams=2, num_return_sequences=3), "must be <= num_beams=2"),
        (dict(beams=2), "decoding.beams: unknown key"),
    ],
)
def test_bad_settings_are_user_errors(bad, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate(gptfit_model(), prompts(), bad)
