"""What gptfit adds to Opacus for DP-SGD (train.dp), imported only when DP-SGD is on (run/privacy.py): Opacus
sets process-wide warning filters and grad samplers when it loads, and costs a quarter of a second to import.

- gptfit's GPT has bias-free LayerNorms, on which Opacus's own LayerNorm grad sampler fails (it reads
  `layer.bias.requires_grad`): `layer_norm_grad_sample` replaces it, bias or not;
- the Trainer clears `p.grad` after a step but not `p.grad_sample`, which the next backward would add to:
  `StepDPOptimizer` clears both.
Layers Opacus has no grad sampler for (GPT-2's Conv1D) get theirs from functorch, which Opacus falls back to.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.utils import register_grad_sampler
from opacus.optimizers import DPOptimizer
from torch import nn

# The hooks fire on the first layer's output, whose input (token ids) takes no gradient: as intended.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")


@register_grad_sampler(nn.LayerNorm)
def layer_norm_grad_sample(layer: nn.LayerNorm, activations: list, backprops: torch.Tensor) -> dict:
    """Per-sample gradients of a LayerNorm's weight and, where it has one, its bias."""
    x = activations[0]  # [batch, ..., normalized]
    summed = tuple(range(1, x.dim() - len(layer.normalized_shape)))  # every dimension but batch and normalized
    grads = {}
    if layer.weight is not None and layer.weight.requires_grad:
        grads[layer.weight] = (F.layer_norm(x, layer.normalized_shape, eps=layer.eps) * backprops).sum(summed)
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = backprops.sum(summed)
    return grads


class StepDPOptimizer(DPOptimizer):
    def step(self, closure=None):
        result = super().step(closure)
        self.zero_grad(set_to_none=True)  # p.grad_sample too, which the Trainer would leave to add up
        return result


def attach(model: nn.Module) -> None:
    """Opacus's per-sample hooks on `model`'s layers (the hooks stay with the model; the wrapper is not kept)."""
    GradSampleModule(model, loss_reduction="mean")


def private_optimizer(optimizer, noise_multiplier: float, max_grad_norm: float, batch_size: int) -> DPOptimizer:
    if isinstance(optimizer, DPOptimizer):
        return optimizer
    return StepDPOptimizer(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=batch_size,
        loss_reduction="mean",
    )
