"""The tests that matter on a GPU, run on every device torch has here: CUDA where present, and the CPU for the
checks that no other module makes (bf16 training, batch invariance); the CPU cases of the others live in
test_attention.py, test_model.py and test_sampling.py, so that no test runs twice.

The CUDA cases carry the `cuda` mark: `pytest -m cuda` runs them alone (bench/gpu.sh does, on the H200);
on a machine without CUDA they do not exist, so nothing is skipped. They check:
- the model's forward and gradients: the fast attention path against the explicit one, in fp32 and under
  bf16 autocast (train.precision=bf16), and the fused output layer + loss against the plain one;
- decoding: gptfit's loops pick the tokens of transformers' `generate` (greedy, beam search, sampled);
- `generate_each`: every setting decoded at once equals each setting decoded alone, and the property it
  rests on, that a row's logits do not depend on the rows decoded beside it (batch invariance). On a GPU
  the second may fail where the first still passes by luck: then the identity holds for these prompts,
  not by construction.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList

from gptfit.core.lm_loss import IGNORE_INDEX, linear_cross_entropy
from gptfit.core.sampling import TransformProcessor, as_setting, generate, generate_each
from gptfit.core.sampling.decode import _small_step_kernels
from gptfit.core.sampling.steps import CachedSteps
from gptfit.model import GPTConfig, GPTForCausalLM
from tests.test_sampling import SAMPLED, prompts

pytestmark = pytest.mark.usefixtures("one_thread")
CUDA = [pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else []
# Checks that no other module makes run on every device; those whose CPU case another module holds
# (test_attention.py, test_model.py, test_sampling.py) run here on CUDA alone, so that no test runs twice.
DEVICES = ["cpu", *CUDA]


def cuda_only(test):
    """The test on CUDA alone; on a machine without CUDA it does not exist (nothing is skipped)."""
    return pytest.mark.parametrize("device", CUDA)(test) if CUDA else None


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def model_on(device: str, seed: int = 0, **shape) -> GPTForCausalLM:
    """gptfit's GPT on `device` in fp32, eval mode; `shape` overrides a 2-layer, 64-wide model."""
    torch.manual_seed(seed)
    config = {**dict(vocab_size=256, n_layer=2, n_head=4, n_embd=64, block_size=192, dropout=0.0), **shape}
    return GPTForCausalLM(GPTConfig(**config)).to(device).eval()


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


def assert_no_worse(fast, explicit, reference, floor: float, what: str) -> None:
    """The fast path is at most twice as far from the fp64 reference as the explicit path (plus `floor`):
    two roundings of the same arithmetic differ by about their precision, whatever that precision is."""
    fast_err, explicit_err = relative_error(fast, reference), relative_error(explicit, reference)
    assert fast_err <= 2 * explicit_err + floor, f"{what}: fast {fast_err:.2e}, explicit {explicit_err:.2e}"


def autocast(device: str, dtype: torch.dtype | None):
    """bf16 autocast as train.precision=bf16 runs it; None: none."""
    return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def loss_logits_grads(model, ids, capture: bool, dtype: torch.dtype | None):
    """(loss in training mode, logits in eval mode, every parameter's gradient) through one attention path;
    dtype: the autocast dtype, None for none."""
    model.set_capture(capture)
    try:
        with autocast(ids.device.type, dtype):
            model.train()
            loss = model(input_ids=ids, labels=ids).loss  # the fused output layer + loss, as in training
            grads = torch.autograd.grad(loss, list(model.parameters()))
            model.eval()
            with torch.no_grad():
                logits = model(input_ids=ids).logits
    finally:
        model.set_capture(False)
    return loss.detach(), logits, grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [48, 160])  # on CPU: the short-window kernel, and the fused one beyond it
def test_model_fast_path_matches_the_explicit_path_in_value_and_gradient(device, dtype, length):
    model = model_on(device)
    ids = torch.randint(0, 256, (3, length), generator=torch.Generator().manual_seed(1)).to(device)
    lower = None if dtype == "fp32" else DTYPES[dtype]
    fast = loss_logits_grads(model, ids, capture=False, dtype=lower)
    explicit = loss_logits_grads(model, ids, capture=True, dtype=lower)
    reference = loss_logits_grads(model.double(), ids, capture=True, dtype=None)
    floor = 1e-5 if dtype == "fp32" else 1e-3
    names = [name for name, _ in model.named_parameters()]
    assert_no_worse(fast[0], explicit[0], reference[0], floor, "loss")
    assert_no_worse(fast[1], explicit[1], reference[1], floor, "logits")
    for name, a, b, ref in zip(names, fast[2], explicit[2], reference[2]):
        assert_no_worse(a, b, ref, floor, f"gradient of {name}")


@cuda_only
def test_left_padded_forward_matches_the_explicit_path(device):
    model = model_on(device)
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2)).to(device)
    mask = torch.ones_like(ids)
    mask[0, :7] = 0
    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask).logits
        model.set_capture(True)
        explicit = model(input_ids=ids, attention_mask=mask).logits
        model.set_capture(False)
    real = mask.bool()
    torch.testing.assert_close(fast[real], explicit[real], atol=1e-4, rtol=1e-4)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_loss_matches_the_plain_loss_in_value_and_gradient(device, dtype):
    # 600 tokens over a vocabulary of 2048: two chunks; some targets ignored.
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(600, 64, generator=g).to(device).requires_grad_()
    weight = (torch.randn(2048, 64, generator=g) * 0.1).to(device).requires_grad_()
    targets = torch.randint(0, 2048, (600,), generator=g).to(device)
    targets[::7] = IGNORE_INDEX

    def plain(h, w):
        return F.cross_entropy(F.linear(h, w).float(), targets, ignore_index=IGNORE_INDEX)

    with autocast(device, None if dtype == "fp32" else DTYPES[dtype]):
        fused = linear_cross_entropy(hidden, weight, targets)
        fused_grads = torch.autograd.grad(fused, (hidden, weight))
        unfused = plain(hidden, weight)
        unfused_grads = torch.autograd.grad(unfused, (hidden, weight))
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    ref = F.cross_entropy(F.linear(h64, w64), targets, ignore_index=IGNORE_INDEX)
    ref_grads = torch.autograd.grad(ref, (h64, w64))
    floor = 1e-5 if dtype == "fp32" else 1e-3
    assert_no_worse(fused.detach(), unfused.detach(), ref.detach(), floor, "loss")
    for name, a, b, r in zip(("hidden", "weight"), fused_grads, unfused_grads, ref_grads):
        assert_no_worse(a, b, r, floor, f"gradient of {name}")


SEARCH = {
    "greedy": dict(num_beams=1),
    "beam3": dict(num_beams=3),
    "beam4_returns2": dict(num_beams=4, length_penalty=2.0, early_stopping=True, num_return_sequences=2),
}


@cuda_only
@pytest.mark.parametrize("search", SEARCH)
def test_search_picks_the_tokens_of_generate(device, search):
    model = model_on(device, vocab_size=2048, n_layer=4, n_head=4, n_embd=128)
    ids = prompts(4, 6).to(device)
    s = dict(SEARCH[search], max_new_tokens=24)
    with torch.inference_mode():
        expected = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            eos_token_id=None,
            pad_token_id=1,
            return_dict_in_generate=True,
            output_scores=True,
            **s,
        )
    got = generate(model, ids, s, eos_token_id=[])
    assert got.backend == "cached"
    assert torch.equal(got.sequences, expected.sequences), (got.sequences, expected.sequences)
    if s["num_beams"] > 1:
        torch.testing.assert_close(got.scores, expected.sequences_scores)


@cuda_only
@pytest.mark.parametrize("sampled", [1, 4])  # temperature 0.7; temperature + top-k + top-p, 3 sequences each
def test_sampling_draws_the_tokens_of_generate_with_the_same_seed(device, sampled):
    model = model_on(device, vocab_size=2048, n_layer=4, n_head=4, n_embd=128)
    ids = prompts(4, 6).to(device)
    s = as_setting(dict(SAMPLED[sampled], max_new_tokens=24))
    got = generate(model, ids, s, seed=5, eos_token_id=[])
    torch.manual_seed(5)  # generate draws from the global generator (the device's, on CUDA)
    expected = model.generate(
        ids.repeat_interleave(s.num_return_sequences, 0),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=24,
        eos_token_id=None,
        pad_token_id=1,
        logits_processor=LogitsProcessorList([TransformProcessor(s)]),
    )
    assert torch.equal(got.sequences, expected)


def padded_prompts(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """3 prompts of 6 tokens, the first left-padded by 2."""
    ids = prompts(3, 6).to(device)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    return ids, mask


@pytest.mark.slow
@cuda_only
@pytest.mark.parametrize("rows_at_once", [None, 7])  # 7: the settings split over several batches
def test_every_setting_decoded_at_once_is_each_setting_decoded_alone(device, rows_at_once):
    # The shape of gptfit's default model (conf/model/tiny.yaml); end-of-text ends the greedy rows early.
    model = model_on(device, vocab_size=2048, n_layer=4, n_head=4, n_embd=128, block_size=64)
    ids, mask = padded_prompts(device)
    eos = generate(model, ids, dict(max_new_tokens=3), attention_mask=mask, eos_token_id=[]).new_tokens[:, 2].tolist()
    settings = {
        "greedy": dict(max_new_tokens=24),
        "beam": dict(num_beams=2, max_new_tokens=24),
        **{f"sampled_{i}": dict(s, max_new_tokens=24) for i, s in enumerate(SAMPLED)},
        "short": dict(do_sample=True, top_k=6, max_new_tokens=4),
    }
    together = generate_each(
        model, ids, settings, attention_mask=mask, seed=5, eos_token_id=eos, rows_at_once=rows_at_once
    )
    differ = []
    for name, s in settings.items():
        alone = generate(model, ids, s, attention_mask=mask, seed=5, eos_token_id=eos)
        if not torch.equal(together[name].sequences, alone.sequences):
            differ.append(name)
    assert not differ, f"decoded at once, these settings differ from decoding alone on {device}: {differ}"


def teacher_forced_logits(model, ids, mask, copies: int, steps: int, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The first 3 rows' logits of `copies` x (ids, mask) through the cached prefill and `steps` steps, the
    new tokens [3, steps] fed to every copy; with the kernels that decoding picks (oneDNN off on CPU)."""
    rows, rows_mask = ids.repeat(copies, 1), mask.repeat(copies, 1)
    stepper = CachedSteps(model, model.config.block_size, len(rows), ids.shape[1] + steps)
    with torch.inference_mode(), _small_step_kernels(model, ids.device):
        out = [stepper.prefill(rows, rows_mask)[:3]]
        for t in range(steps):
            new = tokens[:, t : t + 1].repeat(copies, 1)
            rows, rows_mask = torch.cat([rows, new], 1), torch.cat([rows_mask, torch.ones_like(new)], 1)
            out.append(stepper.step(rows, rows_mask)[:3])
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("copies", [9, 22])  # 27 and 66 rows in the batch
def test_a_rows_logits_barely_depend_on_the_rows_decoded_beside_it(device, copies, record_property):
    # What generate_each rests on: the cached prefill and steps give a row the same logits in a batch of
    # `copies` x 3 rows as in a batch of the 3 alone. Not bit for bit: a matrix product's kernel is chosen by
    # its row count, and even the CPU's differs in the last bit (about 5e-7 here). So the tokens agree
    # unless two candidates are that close. The largest difference, and whether there was any, are
    # recorded (bench/gpu.sh reports them) and bounded here.
    model = model_on(device, vocab_size=2048, n_layer=4, n_head=4, n_embd=128, block_size=64)
    ids, mask = padded_prompts(device)
    tokens = generate(model, ids, dict(max_new_tokens=8), attention_mask=mask, eos_token_id=[]).new_tokens
    alone = teacher_forced_logits(model, ids, mask, 1, 8, tokens)
    beside = teacher_forced_logits(model, ids, mask, copies, 8, tokens)
    diff = max(float((a - b).abs().max()) for a, b in zip(alone, beside))
    record_property("max_abs_logit_diff", diff)
    record_property("bitwise_equal", all(torch.equal(a, b) for a, b in zip(alone, beside)))
    assert diff <= 1e-5, f"on {device}: a row's logits differ by up to {diff:.2e} beside other rows"
