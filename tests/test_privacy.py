"""DP-SGD (gptfit/run/privacy.py): per-window gradients equal the gradients of single windows, for gptfit's GPT
(bias-free and with biases, tied embeddings), GPT-2 and LoRA adapters; epsilon is Opacus's accountant's; the
Poisson batches; the null delta's rule, the privacy unit in the record and the clipping-only control; bad
values are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from gptfit.config import DpConfig, TrainConfig
from gptfit.core.lm_loss import IGNORE_INDEX
from gptfit.errors import UserError
from gptfit.model.gpt import GPTConfig, GPTForCausalLM
from gptfit.run.privacy import PoissonBatches, PoissonWindows, default_delta, plan, private_loss

VOCAB, T, B = 40, 12, 5


def gptfit_gpt(bias: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return GPTForCausalLM(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=2, n_head=2, n_embd=16, bias=bias))


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def lora_gpt() -> torch.nn.Module:
    model = gptfit_gpt(bias=False)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"]))


def batch() -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (B, T), generator=g)  # [batch, time]
    labels = ids.clone()
    labels[1, 3:7] = IGNORE_INDEX  # a goldfish-style gap: a window's own count of targets
    return {"input_ids": ids, "labels": labels}


@pytest.mark.parametrize("make", [lambda: gptfit_gpt(False), lambda: gptfit_gpt(True), gpt2, lora_gpt])
def test_per_window_gradients_equal_single_window_gradients(make):
    model = make().train()
    for m in model.modules():  # dropout off: the loop and the batch must see the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    from gptfit.run.privacy import Privacy

    inputs = batch()
    Privacy(1.0, 0.1, 1e-5, 1.0, 50, 5).attach(model)
    private_loss(model, inputs).backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    per_sample = {n: p.grad_sample.detach().clone() for n, p in trained}
    assert all(g.shape[0] == B for g in per_sample.values())  # the position embedding's too (not batch 1)
    for _, p in trained:
        p.grad, p.grad_sample = None, None
    for i in range(B):
        single = {k: v[i : i + 1] for k, v in inputs.items()}
        model.zero_grad()
        private_loss(model, single).backward()
        for n, p in trained:
            torch.testing.assert_close(per_sample[n][i], p.grad, rtol=1e-4, atol=1e-6, msg=n)
            p.grad_sample = None


def test_epsilon_is_opacus_accountant_on_the_same_noise_rate_and_steps():
    privacy = plan(DpConfig(noise_multiplier=1.1), windows=200, batch_size=10, steps=300)
    accountant = RDPAccountant()
    for _ in range(300):
        accountant.step(noise_multiplier=1.1, sample_rate=10 / 200)
    assert privacy.delta == 200**-1.1
    assert privacy.epsilon(300) == pytest.approx(accountant.get_epsilon(200**-1.1), rel=1e-9)
    assert privacy.epsilon(100) < privacy.epsilon(300)


def test_target_epsilon_picks_a_noise_that_reaches_it():
    privacy = plan(DpConfig(target_epsilon=4.0), windows=200, batch_size=10, steps=300)
    assert privacy.epsilon(300) == pytest.approx(4.0, rel=0.02)
    assert privacy.epsilon(300) <= 4.0 * 1.001


def test_unreachable_target_epsilon_and_batch_above_windows_are_one_line():
    with pytest.raises(UserError, match=r"train.dp.target_epsilon=1e-06: no noise multiplier"):
        plan(DpConfig(target_epsilon=1e-6), windows=200, batch_size=10, steps=300)
    with pytest.raises(UserError, match=r"train.batch_size=300: .* only 200 windows"):
        plan(DpConfig(noise_multiplier=1.0), windows=200, batch_size=300, steps=300)


def test_a_null_delta_is_one_over_n_to_the_1_1_below_one_over_n():
    windows = 1024 // 48  # the tiny runs' N: 21 windows of model.block_size=48
    privacy = plan(DpConfig(noise_multiplier=1.0), windows=windows, batch_size=8, steps=10, block_size=48)
    assert privacy.delta == pytest.approx(1 / windows**1.1) and privacy.delta == default_delta(windows)
    assert privacy.delta < 1 / windows and privacy.delta_rule == "1/N^1.1"
    below = plan(DpConfig(noise_multiplier=1.0, delta=1e-5), windows=windows, batch_size=8, steps=10)
    assert below.delta == 1e-5 and below.delta_rule == "set"


@pytest.mark.parametrize("delta", [1 / 21, 0.5])
def test_an_explicit_delta_at_or_above_one_over_n_is_one_line(delta):
    with pytest.raises(UserError, match=r"^train\.dp\.delta=\S+: must be below 1 / N = 0\.0476, N = 21 training") as e:
        plan(DpConfig(noise_multiplier=1.0, delta=delta), windows=21, batch_size=8, steps=10)
    assert "\n" not in str(e.value)


def test_the_record_names_the_privacy_unit_and_bounds_groups():
    record = plan(DpConfig(target_epsilon=8.0), windows=21, batch_size=8, steps=10, block_size=48).record()
    assert "training window of model.block_size tokens" in record["unit"]
    assert record["unit_tokens"] == 48 and record["units"] == 21 and not record["clipping_only"]
    assert record["delta"] == default_delta(21) and record["delta_rule"] == "1/N^1.1"
    assert "planted c times" in record["meaning"] and "(k*epsilon, k*exp((k-1)*epsilon)*delta)" in record["meaning"]


def test_zero_noise_is_a_clipping_only_control_with_a_null_epsilon():
    assert TrainConfig(dp=DpConfig(noise_multiplier=0.0)).dp_problems() == []
    assert DpConfig(noise_multiplier=0.0).on
    privacy = plan(DpConfig(noise_multiplier=0.0), windows=21, batch_size=8, steps=10, block_size=48)
    assert privacy.epsilon(0) == 0.0  # nothing trained yet: no data has been touched
    assert privacy.epsilon(10) is None  # no finite epsilon holds; null in JSON
    record = privacy.record()
    assert record["clipping_only"] and record["noise_multiplier"] == 0.0
    assert "clipping" in record["meaning"] and "no privacy guarantee" in record["meaning"]


def test_poisson_batches_are_a_function_of_the_step_with_rate_q():
    batches = list(PoissonBatches(windows=100, rate=0.08, steps=400, seed=3))
    assert batches == list(PoissonBatches(windows=100, rate=0.08, steps=400, seed=3))
    sizes = np.array([len(b) for b in batches if b[0] >= 0])
    assert abs(sizes.mean() - 8) < 0.5  # 400 binomial(100, 0.08) draws: sd of the mean 0.14
    for s, b in enumerate(batches):  # step s's indices decode to step s and distinct windows
        if b[0] >= 0:
            assert {i // 100 for i in b} == {s} and len(set(b)) == len(b)
    empty = list(PoissonBatches(windows=3, rate=0.01, steps=50, seed=0))
    assert any(b[0] < 0 for b in empty)
    windows = PoissonWindows(np.arange(30), block_size=10, steps=50, seed=0)
    stand_in = windows[-1]
    assert (stand_in["labels"] == IGNORE_INDEX).all()
    assert windows[2 * 3 + 1]["input_ids"].tolist() == list(range(10, 20))


@pytest.mark.slow
def test_a_run_without_dp_sgd_does_not_import_opacus(tmp_path):
    # Opacus sets process-wide warning filters and grad samplers when it loads: only train.dp may pay for it.
    from tests.conftest import TINY, run_cli

    env = {"PYTHONPROFILEIMPORTTIME": "1"}  # python -X importtime
    done = run_cli(*TINY, "train.max_steps=1", "train.eval_every=1", f"run_dir={tmp_path / 'run'}", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and "transformers" in imported  # the import log was read
    assert not [name for name in imported if name.startswith("opacus")]
