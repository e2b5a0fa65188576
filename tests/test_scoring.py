"""The padded-sequence scorer as a specification: each target's loss is the model's, padding changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptfit.metrics.scoring import score_sequences

VOCAB = 11


class Bigram(nn.Module):
    """Logits that depend on the current token only, so every target's NLL can be written by hand."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(0)))
        self.dropout = nn.Dropout(0.5)  # would make two scorings differ if eval mode were not on

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.dropout(self.table[input_ids]))


def by_hand(table: torch.Tensor, seq: list[int]) -> list[float]:
    logp = table.log_softmax(-1)
    return [-float(logp[a, b]) for a, b in zip(seq, seq[1:])]


def test_each_target_costs_its_bigram_nll_and_padding_is_masked():
    model = Bigram().train()
    seqs = [[1, 2, 3, 4, 5], [6, 7], [8], [9, 10, 0]]
    scores = score_sequences(model, seqs, batch_size=3, pad_id=0)
    assert scores.losses.shape == scores.hits.shape == scores.mask.shape == (4, 4)
    assert scores.mask.sum(1).tolist() == [4, 1, 0, 2]
    for row, seq in enumerate(seqs):
        n = len(seq) - 1
        assert scores.losses[row, :n].tolist() == pytest.approx(by_hand(model.table.detach(), seq), abs=1e-6)
        assert not scores.losses[row, n:].any() and not scores.hits[row, n:].any()
        assert scores.hits[row, :n].tolist() == [bool(model.table[a].argmax() == b) for a, b in zip(seq, seq[1:])]
    assert scores.total()[2] == 0 and scores.mean()[2] == 0  # one token: nothing to score
    assert scores.mean()[0] == pytest.approx(sum(by_hand(model.table.detach(), seqs[0])) / 4)
    assert model.training  # the mode it was in


def test_a_tensor_of_windows_scores_as_the_same_lists():
    model = Bigram()
    windows = torch.randint(0, VOCAB, (7, 6), generator=torch.Generator().manual_seed(1))
    a, b = score_sequences(model, windows, batch_size=2), score_sequences(model, windows.tolist(), batch_size=5)
    assert torch.allclose(a.losses, b.losses) and torch.equal(a.hits, b.hits) and a.mask.all()
    assert not a.losses.requires_grad


def test_a_causal_gpt_scores_a_sequence_the_same_alone_and_padded_beside_longer_ones():
    from gptfit.model.gpt import GPTConfig, GPTForCausalLM

    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, block_size=16))
    short, long = [3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8, 9, 7, 9]
    alone = score_sequences(model, [short], batch_size=1)
    together = score_sequences(model, [long, short], batch_size=2, pad_id=7)
    assert together.total()[1] == pytest.approx(float(alone.total()[0]), rel=1e-5)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([long[:-1]])).logits[0]  # [time - 1, vocab]
    expected = float(F.cross_entropy(logits, torch.tensor(long[1:]), reduction="sum"))
    assert float(together.total()[0]) == pytest.approx(expected, rel=1e-5)
