"""gptfit's GPT as a Hugging Face model: it saves, reloads, generates, and its cache changes nothing."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gptfit.data.tokenizer import train_bpe
from gptfit.model import GPTConfig, GPTForCausalLM

TEXTS = ["The cat sat on the mat.", "A dog barked at the cat.", "The mat was red and the dog was brown."] * 5


def tiny_model(vocab=300, block=32, seed=0):
    torch.manual_seed(seed)
    return GPTForCausalLM(GPTConfig(vocab_size=vocab, n_layer=2, n_head=2, n_embd=32, block_size=block)).eval()


def test_save_and_load_round_trip_of_model_and_tokenizer(tmp_path, cache_dir):
    tokenizer = train_bpe(TEXTS, 300, cache_dir)
    model = tiny_model(vocab=len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is GPTForCausalLM
    ids = torch.tensor([tokenizer.encode("The dog sat on the red mat.")])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert loaded_tok.encode("The dog sat.") == tokenizer.encode("The dog sat.")
    assert loaded_tok.decode(tokenizer.encode("The dog sat.")) == "The dog sat."
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # still tied


def test_generate_with_and_without_cache_gives_the_same_tokens():
    model = tiny_model()
    prompt = torch.randint(0, 300, (2, 4), generator=torch.Generator().manual_seed(1))
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_loss_is_the_next_token_cross_entropy():
    model = tiny_model()
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(2))
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_a_later_token_never_changes_an_earlier_logit():
    model = tiny_model()
    ids = torch.randint(0, 300, (1, 10), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 300
    torch.testing.assert_close(model(ids).logits[:, :6], model(changed).logits[:, :6])


def _loss_and_grads(model, ids, labels, **kw):
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=labels, **kw)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_training_loss_runs_fused_with_the_same_value_and_gradients():
    model = tiny_model().train()
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(4))
    labels = ids.clone()
    labels[0, 3:6] = -100  # ignored targets count for nothing in either path
    fused, fused_grads = _loss_and_grads(model, ids, labels)
    plain, plain_grads = _loss_and_grads(model, ids, labels, return_logits=True)
    assert fused.logits is None and plain.logits is not None  # the fused path never makes the logits
    torch.testing.assert_close(fused.loss, plain.loss)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, msg=name)
    with torch.no_grad():  # where no gradient is taken, the logits come back as always
        assert model(ids, labels=labels).logits.shape == (3, 10, 300)


def test_fused_loss_over_many_chunks_matches_cross_entropy():
    from gptfit.core.lm_loss import _LinearCrossEntropy

    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(50, 16, generator=gen, requires_grad=True)
    weight = torch.randn(40, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 40, (50,), generator=gen)
    targets[::7] = -100
    scale = torch.tensor(0.25)  # as gradient accumulation scales the loss
    (_LinearCrossEntropy.apply(hidden, weight, targets, 7) * scale).backward()  # 8 chunks, the last short
    fused = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    expected = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets)
    (expected * scale).backward()
    torch.testing.assert_close(_LinearCrossEntropy.apply(hidden, weight, targets, 7), expected)
    torch.testing.assert_close(fused[0], hidden.grad)
    torch.testing.assert_close(fused[1], weight.grad)


def test_fused_loss_under_bf16_autocast_matches_the_autocast_output_layer():
    model = tiny_model().train()
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, fused_grads = _loss_and_grads(model, ids, ids)
        plain, plain_grads = _loss_and_grads(model, ids, ids, return_logits=True)
    assert plain.logits.dtype == torch.bfloat16  # the plain output layer did run under autocast
    assert fused.loss.dtype == torch.float32 and fused_grads["transformer.wte.weight"].dtype == torch.float32
    torch.testing.assert_close(fused.loss, plain.loss, atol=2e-2, rtol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=2e-3, rtol=5e-2, msg=name)
