"""Losses at every evaluation: the mean next-token loss, perplexity and bits per byte of fixed training and
held-out windows (eval.train_windows, eval.val_windows), and the generalization gap between them."""

from __future__ import annotations

import math

import torch

from gptfit.data.windows import fixed_windows
from gptfit.keys import GAP, TRAIN_LOSS, VAL_BPB, VAL_LOSS
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.scoring import score_sequences


def loss_keys(prefix: str, losses: torch.Tensor, windows: torch.Tensor, token_bytes) -> dict:
    """<prefix>/loss, ppl and bpb from per-window mean losses ([windows]) of `windows` ([windows, length])."""
    mean = float(losses.mean())
    n_bytes = int(token_bytes[windows[:, 1:].numpy()].sum())
    nats = float(losses.sum()) * (windows.shape[1] - 1)
    return {
        f"{prefix}/loss": mean,
        f"{prefix}/ppl": math.exp(min(mean, 50.0)),
        f"{prefix}/bpb": nats / (math.log(2) * max(n_bytes, 1)),
    }


class Losses(Measure):
    keys = (TRAIN_LOSS, "train/ppl", "train/bpb", VAL_LOSS, "val/ppl", VAL_BPB, GAP)
    when = When.EACH

    def __init__(self, setup: Setup):
        e, corpus = setup.eval, setup.corpus
        self.token_bytes, self.batch_size = corpus.token_bytes, e.batch_size
        self.train = fixed_windows(corpus.train, setup.block_size, e.train_windows, setup.window_stride)
        self.val = fixed_windows(corpus.val, setup.block_size, e.val_windows, setup.window_stride)

    def __call__(self, ev: Evaluation) -> dict:
        row = {}
        for prefix, windows in (("train", self.train), ("val", self.val)):
            losses = score_sequences(ev.model, windows, self.batch_size).mean()  # [windows]
            row.update(loss_keys(prefix, losses, windows, self.token_bytes))
        row[GAP] = row[VAL_LOSS] - row[TRAIN_LOSS]
        return row


def build(setup: Setup) -> Losses:
    return Losses(setup)
