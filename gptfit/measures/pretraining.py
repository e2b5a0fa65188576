"""What a fine-tuning's base memorized of its own training text, and whether the fine-tuned model still
reproduces it (Jagielski et al. 2023, "Measuring Forgetting of Memorized Training Examples"): eval.pretraining_sequences
windows of eval.prefix_tokens + eval.suffix_tokens tokens, evenly spaced over the base's training text, are
scored once by the base itself; those it reproduces exactly (greedy decoding after the prefix gives the whole
suffix) are its memorized ones, counted in `pretraining/memorized` of `pretraining/candidates`. At each
memorization evaluation, `pretraining/extraction` is the share of them the current model still reproduces
(1 at step 0), and `pretraining/loss` their mean loss; both are left out when the base memorized none.

A row is reproduced exactly by greedy decoding exactly when every suffix token is the argmax under teacher
forcing (by induction over the suffix), so one scoring pass decides it, no decoding. The base's training text is
read from its run folder's config (the corpus is cached from its own training)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from gptfit.config import DataConfig
from gptfit.data.corpus import load_corpus
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.scoring import score_sequences
from gptfit.model.loading import load_model


def exact(scores, prefix: int) -> torch.Tensor:
    """[n] whether greedy decoding after each scored row's first `prefix` tokens gives the rest of it exactly."""
    return scores.hits[:, prefix - 1 :].all(1)


def base_windows(base_dir: Path, tokenizer, n: int, length: int) -> torch.Tensor:
    """[n, length] windows evenly spaced over the training text of the run that saved `base_dir` (its final/),
    as that run's config.yaml read it; fewer where the text holds fewer."""
    saved = OmegaConf.load(base_dir.parent / "config.yaml")
    data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), saved.data))
    stream = torch.as_tensor(load_corpus(data, tokenizer, length).train, dtype=torch.long)
    count = min(n, len(stream) // length)
    stride = len(stream) // count
    return torch.stack([stream[i * stride : i * stride + length] for i in range(count)])


class PretrainingMemory(Measure):
    keys = ("pretraining/candidates", "pretraining/memorized", "pretraining/extraction", "pretraining/loss")
    when = When.TABLE

    def __init__(self, setup: Setup, windows: torch.Tensor, memorized: torch.Tensor):
        self.prefix, self.batch_size = setup.eval.prefix_tokens, setup.eval.batch_size
        self.candidates, self.windows = len(windows), windows[memorized]  # [memorized, length]

    def __call__(self, ev: Evaluation) -> dict:
        row = {"pretraining/candidates": self.candidates, "pretraining/memorized": len(self.windows)}
        if len(self.windows):  # the base memorized some: are they still reproduced, and how likely are they?
            scores = score_sequences(ev.model, self.windows, self.batch_size)
            row["pretraining/extraction"] = float(exact(scores, self.prefix).float().mean())
            row["pretraining/loss"] = float(scores.mean().mean())
        return row


def build(setup: Setup) -> PretrainingMemory | None:
    n = setup.eval.pretraining_sequences
    if not n or not setup.base:
        return None
    base_dir = Path(setup.base)
    windows = base_windows(base_dir, setup.tokenizer, n, setup.eval.prefix_tokens + setup.eval.suffix_tokens)
    base = setup.reference if setup.reference_path == setup.base else load_model(str(base_dir))
    memorized = exact(score_sequences(base, windows, setup.eval.batch_size), setup.eval.prefix_tokens)
    return PretrainingMemory(setup, windows, memorized)
