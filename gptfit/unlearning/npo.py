"""Negative preference optimization (Zhang et al. 2024): the forget set treated as dispreferred answers
against the starting model, loss (2 / beta) E[log(1 + (p(y) / p_start(y))^beta)]. Its gradient is gradient
ascent's, weighted down as a sequence's likelihood falls below the starting model's, so it slows where
gradient ascent runs away."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gptfit.unlearning.base import Method, sequence_log_prob


class Npo(Method):
    needs_start = True

    def __init__(self, unlearn):
        super().__init__(unlearn)
        self.beta = unlearn.beta
        self.start = None

    def prepare(self, model, start, forget, retain):
        self.start = start

    def loss(self, model, batch):
        tokens = batch["forget_ids"]
        with torch.no_grad():
            start = sequence_log_prob(self.start, tokens)  # [batch]
        ratio = sequence_log_prob(model, tokens) - start  # [batch] log p / p_start
        # -log sigmoid(-beta x) = softplus(beta x)
        return (2.0 / self.beta) * F.softplus(self.beta * ratio).mean()
