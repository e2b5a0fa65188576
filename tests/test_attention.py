"""The masked multi-head self-attention: both paths agree and no token sees a later one."""

from __future__ import annotations

import torch

from gptfit.core.attention import CausalSelfAttention, causal_mask, explicit_attention, fast_attention


def qkv(batch=2, heads=3, q_len=7, k_len=7, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, q_len, dim, generator=g), torch.randn(batch, heads, k_len, dim, generator=g),
            torch.randn(batch, heads, k_len, dim, generator=g))


def test_causal_mask_allows_exactly_the_past_and_present():
    m = causal_mask(3, 5)  # three new queries after two cached keys
    assert m.tolist() == [[True, True, True, False, False], [True, True, True, True, False], [True] * 5]


def test_explicit_and_fast_paths_agree_without_cache():
    q, k, v = qkv()
    out, probs = explicit_attention(q, k, v)
    torch.testing.assert_close(out, fast_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert torch.all(probs.triu(diagonal=1) == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


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
