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
