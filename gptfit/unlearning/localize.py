"""Localize, then repair (after the localization methods of TinyMem, Sakarvadia et al. 2025): every MLP unit
is scored by how much more it carries the forget set's loss than the retained text's (the attribution
|activation x gradient| of each, averaged over tokens), the top `strength` share of all units is cut out
(its output weights zeroed and its activation held at zero by a hook, so training cannot grow it back), and
the model is fine-tuned on the retained text around the cut. `strength` is that share in percent.

The scores come from the starting model, so a resumed run cuts the same units. The cut is made at the first
training step, so that step 0's evaluation is the starting model's, as in every method. The saved model
needs no hook: a unit whose output weights are zero contributes nothing without it.
"""

from __future__ import annotations

import torch
from torch import nn

from gptfit.unlearning.base import Method, mean_nll

EPS = 1e-8
BATCH = 32


def projections(model) -> list[nn.Module]:
    """Each block's MLP output projection, whose input is the block's units (gptfit's GPT and GPT-2 alike)."""
    return [module for name, module in model.named_modules() if name.endswith("mlp.c_proj")]


def attribution(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Per block, [units] the mean |activation x d loss / d activation| of each MLP unit over `tokens`."""
    caught: list[torch.Tensor] = []

    def catch(module, args):
        unit = args[0].detach().requires_grad_()  # [batch, length, units]: a leaf, so that its gradient is kept
        caught.append(unit)
        return (unit, *args[1:])

    hooks = [m.register_forward_pre_hook(catch) for m in projections(model)]
    sums = None
    try:
        for batch in tokens.split(BATCH):
            caught.clear()
            mean_nll(model, batch).backward()
            parts = [(u * u.grad).abs().sum(dim=(0, 1)) for u in caught]  # [units] each
            sums = parts if sums is None else [s + p for s, p in zip(sums, parts)]
    finally:
        for hook in hooks:
            hook.remove()
    return [s / tokens.numel() for s in sums]


def cut(module: nn.Module, units: torch.Tensor) -> None:
    """Zero the output weights of `units` and hold their activations at zero from now on."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):  # [out, in]
            module.weight[:, units] = 0.0
        else:  # GPT-2's Conv1D: [in, out]
            module.weight[units, :] = 0.0
    keep = torch.ones(module.weight.shape[1] if isinstance(module, nn.Linear) else module.weight.shape[0])
    keep[units] = 0.0

    def hold(module, args):
        return (args[0] * keep.to(args[0].device, args[0].dtype), *args[1:])

    module.register_forward_pre_hook(hold)


class Localize(Method):
    needs_start = True

    def prepare(self, model, start, forget, retain):
        forget_scores = attribution(start, forget)
        retain_scores = attribution(start, retain)
        ratio = torch.cat([f / (r + EPS) for f, r in zip(forget_scores, retain_scores)])  # [blocks x units]
        n_cut = max(1, round(self.strength / 100 * len(ratio)))
        chosen = torch.zeros(len(ratio), dtype=torch.bool)
        chosen[ratio.topk(n_cut).indices] = True
        width = len(forget_scores[0])
        self.pending = [
            (module, chosen[b * width : (b + 1) * width].nonzero().squeeze(1))
            for b, module in enumerate(projections(model))
        ]
        self.cut_units = n_cut

    def loss(self, model, batch):
        for module, units in self.pending:  # once, at the first step (and the first after a resume)
            if len(units):
                cut(module, units)
        self.pending = []
        return mean_nll(model, batch["input_ids"], batch["labels"])
