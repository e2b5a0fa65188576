"""Gradient ascent: climb the forget set's loss (the first unlearning baseline; Jang et al. 2023). Nothing
holds the rest of the model in place, so it degrades everything if run long."""

from __future__ import annotations

from gptfit.unlearning.base import Method, mean_nll


class GradientAscent(Method):
    def loss(self, model, batch):
        return -mean_nll(model, batch["forget_ids"])
