"""Gradient difference: climb the forget set's loss while descending the retained text's (Liu et al. 2022),
so that what should stay is trained on at the same time."""

from __future__ import annotations

from gptfit.unlearning.base import Method, mean_nll


class GradientDifference(Method):
    def loss(self, model, batch):
        forget = mean_nll(model, batch["forget_ids"])
        retain = mean_nll(model, batch["input_ids"], batch["labels"])
        return retain - self.strength * forget
