"""Fine-tuning on the retained text alone: the cheap baseline, which forgets only as fast as training on
other text overwrites (what data.forget's forgetting curve shows without unlearning)."""

from __future__ import annotations

from gptfit.unlearning.base import Method, mean_nll


class Retain(Method):
    def loss(self, model, batch):
        return mean_nll(model, batch["input_ids"], batch["labels"])
