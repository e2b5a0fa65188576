"""train.finetune: each method trains exactly what it says, on gptfit's GPT, GPT-2 and GPT-NeoX, and what a
LoRA run saves is a plain model that computes what the adapted one did."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

from gptfit.config.train import LoraConfig, TrainConfig
from gptfit.core.sampling import generate
from gptfit.errors import UserError
from gptfit.model import GPTConfig, GPTForCausalLM
from gptfit.model.finetune import (
    apply_finetune,
    count_parameters,
    default_target_modules,
    is_lora,
    plain_model,
    save_adapter,
)

VOCAB = 65
FAMILIES = ("gptfit", "gpt2", "gpt_neox")
METHODS = ("full", "lora", "top_layers", "head")
# Two blocks of width 32 with a 4x MLP in each family: a LoRA of rank 4 on attention and MLP adds
# 4 x (in + out) per layer: 4 x (128 + 64 + 160 + 160) = 2,048 a block, 4,096 in all.
LORA_R4_PARAMS = 4096


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny ops on one thread


def _configs() -> dict:
    ids = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return {
        "gptfit": GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, **ids),
        "gpt2": GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, **ids),
        "gpt_neox": GPTNeoXConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            hidden_size=32,
            intermediate_size=128,
            max_position_embeddings=64,
            **ids,
        ),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """{family: a folder holding a tiny model of it}, as a run would load a pretrained model."""
    folders = {}
    for family, config in _configs().items():
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(family)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        folders[family] = folder
    return folders


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder)


def batch(seed: int = 0, rows: int = 2, time: int = 16) -> torch.LongTensor:
    return torch.randint(0, VOCAB, (rows, time), generator=torch.Generator().manual_seed(seed))  # [rows, time]


def train(finetune: str, **kw) -> TrainConfig:
    return TrainConfig(finetune=finetune, lora=LoraConfig(r=kw.pop("r", 4), **kw))


def one_step(model, seed: int = 0, lr: float = 1e-2) -> None:
    """One AdamW step over the trainable parameters, as the Trainer takes it (training mode, labels)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ids = batch(seed)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()


def logits(model, ids: torch.LongTensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # [rows, time, vocab]


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_the_adapters(saved, family):
    model = apply_finetune(load(saved[family]), train("lora"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert is_lora(model) and trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    base = sum(p.numel() for p in load(saved[family]).parameters())
    assert count_parameters(model) == (LORA_R4_PARAMS, base)


def test_lora_on_a_small_model_trains_under_a_tenth_of_it():
    # conf/model/small.yaml's shape (6 blocks of width 384) with the default rank 8
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=2048, n_layer=6, n_head=6, n_embd=384, block_size=256))
    trainable, total = count_parameters(apply_finetune(model, TrainConfig(finetune="lora")))
    per_block = 8 * ((384 + 3 * 384) + (384 + 384) + 2 * (384 + 4 * 384))  # c_attn, attn c_proj, c_fc, mlp c_proj
    assert trainable == 6 * per_block == 294_912
    assert trainable / total < 0.10


def test_default_targets_follow_the_family(saved):
    assert default_target_modules(load(saved["gptfit"])) == ["c_attn", "c_proj", "c_fc"]
    assert default_target_modules(load(saved["gpt2"])) == ["c_attn", "c_proj", "c_fc"]
    assert default_target_modules(load(saved["gpt_neox"])) == [
        "query_key_value",
        "dense",
        "dense_h_to_4h",
        "dense_4h_to_h",
    ]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_one_step_changes_only_what_trains(saved, family, method):
    model = apply_finetune(load(saved[family]), train(method))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    if method == "lora":  # B starts at 0, so A's first gradient is 0: only B moves in step one
        assert changed == {n for n in trainable if "lora_B" in n}
    else:
        assert changed == trainable
    embedding = model.get_input_embeddings().weight
    assert embedding.requires_grad == (method == "full")
    if method == "top_layers":  # the last block and the final norm, nothing else
        assert all(".h.1." in n or ".layers.1." in n or "ln_f" in n or "final_layer_norm" in n for n in trainable)
    if method == "head":
        output = model.get_output_embeddings().weight
        assert trainable == {n for n, p in model.named_parameters() if p is output}


def test_lora_trains_through_the_fused_loss_with_the_logits_path_gradients(saved):
    model = apply_finetune(load(saved["gptfit"]), train("lora"))
    one_step(model)  # B away from 0, so every adapter gets a gradient
    model.train()
    ids = batch(1)
    grads = []
    for kw in ({}, {"return_logits": True}):  # fused output layer + loss, then the plain logits path
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids, **kw)
        assert (out.logits is None) == (not kw)
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(g.abs().sum() > 0 for g in grads[0].values())
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_model_computes_what_the_adapted_one_did_and_reloads_without_peft(saved, family, tmp_path):
    model = apply_finetune(load(saved[family]), train("lora"))
    one_step(model)
    ids = batch(2)
    adapted = logits(model, ids)
    merged = plain_model(model)
    assert not is_lora(merged) and type(merged).__name__ == type(load(saved[family])).__name__
    torch.testing.assert_close(logits(merged, ids), adapted, atol=1e-5, rtol=0)
    # the training model is untouched: still adapted, not merged, the same logits
    assert is_lora(model) and not any(getattr(m, "merged", False) for m in model.modules())
    torch.testing.assert_close(logits(model, ids), adapted, atol=0, rtol=0)
    merged.save_pretrained(tmp_path / "final")
    reloaded = load(tmp_path / "final")
    assert not (tmp_path / "final" / "adapter_config.json").exists()
    assert not any("lora" in n or "base_layer" in n for n, _ in reloaded.named_parameters())
    torch.testing.assert_close(logits(reloaded, ids), adapted, atol=1e-5, rtol=0)
    one_step(model, seed=3)  # training goes on after a save
    assert not torch.allclose(logits(model, ids), adapted)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft's, on loading
def test_adapter_saves_and_loads_back_onto_the_base_model(saved, tmp_path):
    import peft

    model = apply_finetune(load(saved["gpt2"]), train("lora"))
    one_step(model)
    save_adapter(model, tmp_path / "adapter")
    save_adapter(model, tmp_path / "adapter")  # a second save replaces the first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    again = peft.PeftModel.from_pretrained(load(saved["gpt2"]), tmp_path / "adapter")
    torch.testing.assert_close(logits(again, batch(4)), logits(model, batch(4)))


@pytest.mark.parametrize("family", FAMILIES)
def test_head_is_untied_and_stays_untied_after_save_and_reload(saved, family, tmp_path):
    model = apply_finetune(load(saved[family]), train("head"))
    embedding_before = model.get_input_embeddings().weight.detach().clone()
    one_step(model, lr=0.1)
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert out is not inp and torch.equal(inp, embedding_before) and not torch.equal(out, inp)
    assert model.config.tie_word_embeddings is False
    model.save_pretrained(tmp_path)
    reloaded = load(tmp_path)
    assert reloaded.get_output_embeddings().weight is not reloaded.get_input_embeddings().weight
    torch.testing.assert_close(reloaded.get_output_embeddings().weight, out)
    torch.testing.assert_close(reloaded.get_input_embeddings().weight, inp)
    ids = batch(5)
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids))


def test_generate_decodes_a_lora_model_as_its_own_generate_does(saved):
    model = apply_finetune(load(saved["gptfit"]), train("lora"))
    one_step(model, lr=0.05)  # adapters that change the output
    prompt = batch(6, rows=2, time=5)
    # end-of-text (token 0) barred for all 12 steps in both, so that neither stops early
    ours = generate(model, prompt, {"do_sample": False, "max_new_tokens": 12}, min_new_tokens=12)
    assert ours.backend == "cached"  # gptfit's cached loop, through the adapted modules
    with torch.no_grad():
        mask = torch.ones_like(prompt)
        theirs = model.generate(
            input_ids=prompt, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False
        )
    assert torch.equal(ours.sequences, theirs)
    base = generate(load(saved["gptfit"]), prompt, {"do_sample": False, "max_new_tokens": 12}, min_new_tokens=12)
    assert not torch.equal(base.sequences, ours.sequences)  # the adapter is really in the path


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"finetune": "prefix"}, "train.finetune='prefix': one of full, lora, top_layers, head"),
        ({"finetune_layers": 0}, "train.finetune_layers=0: must be >= 1"),
        ({"lora": LoraConfig(r=0)}, "train.lora.r=0: must be >= 1"),
        ({"lora": LoraConfig(alpha=0)}, "train.lora.alpha=0: must be > 0"),
        ({"lora": LoraConfig(dropout=1.0)}, "train.lora.dropout=1.0: must be in [0, 1)"),
        ({"lora": LoraConfig(target_modules=[])}, "train.lora.target_modules=[]: must be null"),
    ],
)
def test_bad_values_are_one_line_each(override, expected):
    problems = TrainConfig(**override).problems()
    assert len(problems) == 1 and problems[0].startswith(expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_what_the_model_refuses_is_one_line_naming_the_key(saved, family):
    known = default_target_modules(load(saved[family]))[0]
    with pytest.raises(UserError, match=rf"^train\.lora\.target_modules=\['{known}', 'nope'\]: nope: not a") as e:
        apply_finetune(load(saved[family]), train("lora", target_modules=[known, "nope"]))
    assert "\n" not in str(e.value)
    model = load(saved[family])
    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())  # lm_head
    with pytest.raises(UserError, match=rf"^train\.lora\.target_modules=\['{head}'\]: {head}: the output layer"):
        apply_finetune(load(saved[family]), train("lora", target_modules=[head]))
    with pytest.raises(UserError, match=r"^train\.finetune_layers=5: the model has 2 blocks; set it to at most 2"):
        apply_finetune(load(saved[family]), TrainConfig(finetune="top_layers", finetune_layers=5))
