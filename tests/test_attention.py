"""The masked multi-head self-attention: both paths agree and no token sees a later one."""

from __future__ import annotations

import pytest
import torch
import yaml

from gptfit.core.attention import CausalSelfAttention, explicit_attention, fast_attention
from gptfit.core.attention_cpu import SHORT_WINDOW
from gptfit.core.masks import causal_mask


def qkv(batch=2, heads=3, q_len=7, k_len=7, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, q_len, dim, generator=g),
        torch.randn(batch, heads, k_len, dim, generator=g),
        torch.randn(batch, heads, k_len, dim, generator=g),
    )


def test_causal_mask_allows_exactly_the_past_and_present():
    m = causal_mask(3, 5)  # three new queries after two cached keys
    assert m.tolist() == [[True, True, True, False, False], [True, True, True, True, False], [True] * 5]


def test_explicit_and_fast_paths_agree_without_cache():
    q, k, v = qkv()
    out, probs = explicit_attention(q, k, v)
    torch.testing.assert_close(out, fast_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert torch.all(probs.triu(diagonal=1) == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


@pytest.mark.parametrize("length", [7, SHORT_WINDOW, SHORT_WINDOW + 1])
def test_both_fast_kernels_agree_with_the_explicit_path_in_value_and_gradient(length):
    # Up to SHORT_WINDOW positions the fast path is batched matmuls, beyond it the fused kernel.
    q, k, v = (t.requires_grad_() for t in qkv(q_len=length, k_len=length))
    fast = fast_attention(q, k, v)
    grads_fast = torch.autograd.grad(fast.square().sum(), (q, k, v))
    explicit, _ = explicit_attention(q, k, v)
    grads_explicit = torch.autograd.grad(explicit.square().sum(), (q, k, v))
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_explicit):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_a_mask_first_built_while_decoding_serves_training():
    q, k, v = qkv(q_len=9, k_len=9, seed=3)
    with torch.inference_mode():
        fast_attention(q, k, v)  # caches the 9-position mask inside inference mode
    q.requires_grad_()
    fast_attention(q, k, v).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_attention_dropout_acts_on_the_short_window_kernel():
    q, k, v = qkv(q_len=8, k_len=8)
    assert torch.all(fast_attention(q, k, v, dropout_p=1.0) == 0)  # every probability dropped
    torch.manual_seed(0)
    dropped = fast_attention(q, k, v, dropout_p=0.5)
    assert not torch.allclose(dropped, fast_attention(q, k, v))


@pytest.mark.parametrize("length, dropout", [(7, 0.0), (64, 0.0), (SHORT_WINDOW, 0.0), (64, 0.3)])
def test_module_training_kernel_matches_the_explicit_path_in_value_and_every_gradient(length, dropout):
    # Without a cache the module runs its own forward and backward from the fused projection; the
    # explicit path (capture on) is plain autograd. With the same seed both drop the same probabilities.
    torch.manual_seed(0)
    attn = CausalSelfAttention(n_embd=24, n_head=3, dropout=dropout, bias=True, layer_idx=0).train()
    x = torch.randn(2, length, 24, requires_grad=True)
    results = []
    for capture in (False, True):
        attn.capture = capture
        torch.manual_seed(1)
        out = attn(x)
        grads = torch.autograd.grad(out.square().sum(), (x, *attn.parameters()))
        results.append((out, grads))
    (fast, fast_grads), (explicit, explicit_grads) = results
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, explicit_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_paths_agree_with_a_cache_of_earlier_keys():
    for q_len in (1, 3):
        q, k, v = qkv(q_len=q_len, k_len=6)
        out, probs = explicit_attention(q, k, v)
        torch.testing.assert_close(out, fast_attention(q, k, v), atol=1e-5, rtol=1e-5)
        assert torch.all(probs[..., ~causal_mask(q_len, 6)] == 0)


def test_paths_agree_with_left_padding():
    q, k, v = qkv(q_len=5, k_len=5)
    padding = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, probs = explicit_attention(q, k, v, padding)
    torch.testing.assert_close(out, fast_attention(q, k, v, padding), atol=1e-5, rtol=1e-5)
    # Real tokens never attend to padding.
    assert torch.all(probs[0, :, 2:, :2] == 0)


def test_module_capture_keeps_probabilities_without_changing_the_output():
    torch.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=4, dropout=0.0, bias=False, layer_idx=0).eval()
    x = torch.randn(1, 6, 16)
    fast = attn(x)
    attn.capture = True
    captured = attn(x)
    torch.testing.assert_close(fast, captured, atol=1e-5, rtol=1e-5)
    assert attn.captured.shape == (1, 4, 6, 6)
    assert torch.all(attn.captured.triu(diagonal=1) == 0)


# -- capturing a whole model's attention ------------------------------------------------------------

import math  # noqa: E402

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from gptfit.core.attention import attention_maps, copying_score, head_entropy  # noqa: E402
from gptfit.model import GPTConfig, GPTForCausalLM  # noqa: E402
from gptfit.plots.attention import head_summary, heatmap_grid, line_diagram  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def gptfit_model():
    torch.manual_seed(0)
    return GPTForCausalLM(GPTConfig(vocab_size=100, n_layer=2, n_head=2, n_embd=16, block_size=32)).eval()


def test_captured_maps_equal_the_probabilities_recomputed_by_hand():
    model = gptfit_model()
    ids = torch.tensor([5, 17, 5, 42, 9, 17])
    maps = attention_maps(model, ids)
    assert maps.shape == (2, 2, 6, 6)
    # Layer 0 by hand: embeddings, first layer norm, the query/key projections, mask, softmax.
    x = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(6))
    block = model.transformer.h[0]
    q, k, _ = block.attn.c_attn(block.ln_1(x)).split(16, dim=-1)
    for head in range(2):
        qh, kh = q[:, head * 8 : (head + 1) * 8], k[:, head * 8 : (head + 1) * 8]
        scores = (qh @ kh.T) / math.sqrt(8)
        scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(maps[0, head], torch.softmax(scores, -1), atol=1e-6, rtol=1e-5)


def test_gpt2_maps_equal_the_librarys_eager_output_attentions():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()  # SDPA by default: attention_maps switches it to eager
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    maps = attention_maps(model, ids[0])
    eager = GPT2LMHeadModel._from_config(config, attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    expected = torch.stack(eager(ids, output_attentions=True).attentions, dim=1)[0]
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("make", ["gptfit", "gpt2"])
def test_maps_are_causal_and_rows_sum_to_one(make):
    torch.manual_seed(1)
    model = (
        gptfit_model()
        if make == "gptfit"
        else GPT2LMHeadModel(
            GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
        )
    )
    maps = attention_maps(model, torch.randint(0, 100, (12,)))
    assert torch.all(maps.triu(diagonal=1) == 0)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))


def test_capturing_does_not_change_the_logits_and_is_switched_off_after():
    model = gptfit_model()
    ids = torch.randint(0, 100, (1, 10))
    before = model(ids).logits
    attention_maps(model, ids[0])
    torch.testing.assert_close(model(ids).logits, before)
    assert not any(b.attn.capture for b in model.transformer.h)


def test_head_summaries():
    # A head that always looks at the token after an earlier occurrence scores 1; uniform heads have
    # the entropy of a uniform row.
    tokens = [7, 8, 9, 7, 8, 9]
    maps = torch.zeros(1, 2, 6, 6)
    for i in range(6):
        maps[0, 1, i, : i + 1] = 1.0 / (i + 1)
        maps[0, 0, i, i] = 1.0
    for i in (3, 4, 5):
        maps[0, 0, i] = 0
        maps[0, 0, i, i - 2] = 1.0
    assert copying_score(maps, tokens)[0, 0] == pytest.approx(1.0)
    expected = sum(math.log(i + 1) for i in range(6)) / 6
    assert head_entropy(maps)[0, 1] == pytest.approx(expected, rel=1e-5)


def test_figures_never_draw_a_line_to_a_later_token():
    model = gptfit_model()
    ids = torch.tensor([5, 17, 5, 42, 9, 17, 3])
    maps = attention_maps(model, ids)
    labels = [f"t{t}" for t in ids.tolist()]
    for head in (None, 0, 1):
        fig = line_diagram(maps, labels, layer=1, head=head, threshold=0.0)
        drawn = [line.get_gid() for line in fig.axes[0].lines]
        assert drawn and all(int(q) >= int(k) for q, k in (g.split("->") for g in drawn))
        assert len(drawn) == 7 * 8 // 2  # every allowed pair, and only those
    assert len(heatmap_grid(maps, labels).axes) == 4
    assert len(head_summary(maps, ids.tolist()).axes) >= 2


@pytest.mark.slow
def test_attend_command_writes_the_figures(tiny_run, tmp_path):
    result = run_cli(f"run={tiny_run[0]}", f"out={tmp_path}", "layer=1", "head=0", module="gptfit.attend")
    assert result.returncode == 0, result.stderr
    for name in ("attention_heatmaps.png", "attention_lines.png", "attention_heads.png"):
        assert (tmp_path / name).stat().st_size > 5000 and str(tmp_path / name) in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["prompt= "], "prompt is empty"),
        (["prompt=" + "word " * 200], "longer than the model's context"),
        (["layer=9"], "layer=9: the model has layers 0..1"),
    ],
)
def test_attend_bad_input(tiny_run, tmp_path, args, message):
    result = run_cli(f"run={tiny_run[0]}", f"out={tmp_path}", *args, module="gptfit.attend")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_training_logs_attention_entropy_when_asked(make_config, tmp_path):
    import json

    from gptfit.run.training import train
    from tests.conftest import TINY

    train(make_config([*TINY, "train.max_steps=5", "eval.attention=true", "decoding=none"], tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(f"attn/l{layer}h{h}/entropy" in r for r in rows for layer in range(2) for h in range(2))


def test_attend_command_prints_its_composed_config_and_refuses_unknown_keys(tiny_run):
    result = run_cli(f"run={tiny_run[0]}", "layer=1", "--cfg", "job", module="gptfit.attend")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["layer"] == 1 and cfg["head"] is None and cfg["prompt"].startswith("My friend")
    result = run_cli(f"run={tiny_run[0]}", "heads=2", "--cfg", "job", module="gptfit.attend")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "heads" in lines[0]
