"""DP-SGD (train.dp; Abadi et al. 2016) through Opacus: per-window gradients, clipped and noised, on
Poisson-sampled batches, with Opacus's RDP accountant for epsilon.

The privacy unit is a training window: the training set is cut into its non-overlapping windows of
model.block_size (train.sampling=epochs's windows), and every step takes each window independently with
probability q = train.batch_size / windows (`PoissonBatches`). Epsilon is per window: a sequence planted c
times sits in c windows and is protected only as a group, at about c times epsilon.

Three things gptfit does so that Opacus sees every parameter, each checked by tests/test_privacy.py against
gradients of single windows:
- gptfit's GPT has bias-free LayerNorms, on which Opacus's own LayerNorm grad sampler fails (it reads
  `layer.bias.requires_grad`): `layer_norm_grad_sample` below replaces it, bias or not;
- position ids of shape [1, T] would give the position embedding a per-sample gradient of batch 1
  (Opacus issue 841): `private_loss` passes them expanded to [B, T];
- the fused output layer and loss of training (core/lm_loss.py) calls no nn.Linear, so Opacus's hooks would
  miss the output layer and the tied embedding's share through it: `private_loss` takes the logits path.
Layers Opacus has no grad sampler for (GPT-2's Conv1D) get theirs from functorch, which Opacus falls back to.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.utils import register_grad_sampler
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, Sampler

from gptfit.config import DpConfig
from gptfit.core.lm_loss import IGNORE_INDEX
from gptfit.data.windows import Windows
from gptfit.errors import UserError

ACCOUNTANT = "rdp"
# The hooks fire on the first layer's output, whose input (token ids) takes no gradient: as intended.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
# RDP's bound at the largest order it tries: still a valid (if looser) epsilon.
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
POISSON_STREAM = 0xD9  # keeps the batches' random draws apart from the other uses of `seed`


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


@dataclass
class Privacy:
    """One run's DP-SGD: its noise, sampling rate, delta and clipping norm, and the accounting that follows."""

    noise_multiplier: float
    sample_rate: float  # q = batch_size / windows
    delta: float
    max_grad_norm: float
    windows: int  # the examples: non-overlapping training windows
    batch_size: int  # the expected batch, q x windows

    def epsilon(self, steps: int) -> float | None:
        """Epsilon after `steps` steps at `delta` (None without noise: no guarantee at all)."""
        if steps == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return None
        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, self.sample_rate, steps)]
        return float(accountant.get_epsilon(self.delta))

    def record(self) -> dict:
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "windows": self.windows,
            "accountant": ACCOUNTANT,
        }

    def attach(self, model: nn.Module) -> GradSampleModule:
        """Opacus's hooks on `model`'s layers. The Trainer keeps the plain model (its checkpoints and saves stay
        as they are); the hooks fill in `p.grad_sample` on every training backward."""
        return GradSampleModule(model, loss_reduction="mean")

    def optimizer(self, optimizer: torch.optim.Optimizer) -> DPOptimizer:
        return _StepDPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.batch_size,
            loss_reduction="mean",
        )

    def loader(self, dataset, collate_fn, steps: int, seed: int) -> DataLoader:
        batches = PoissonBatches(self.windows, self.sample_rate, steps, seed)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=0)


class _StepDPOptimizer(DPOptimizer):
    def step(self, closure=None):
        result = super().step(closure)
        # The Trainer clears p.grad after a step, not p.grad_sample, which the next backward would add to.
        self.zero_grad(set_to_none=True)
        return result


def plan(dp: DpConfig, windows: int, batch_size: int, steps: int) -> Privacy:
    """The run's DP-SGD from train.dp; the noise multiplier from target_epsilon at `steps` when that is set."""
    if batch_size > windows:
        raise UserError(
            f"train.batch_size={batch_size}: DP-SGD takes each training window with probability batch_size / "
            f"windows, and the training set has only {windows} windows of model.block_size; lower "
            "train.batch_size or raise data.train_tokens"
        )
    rate = batch_size / windows
    delta = dp.delta if dp.delta is not None else 1.0 / windows
    noise = dp.noise_multiplier
    if noise is None:
        try:
            noise = get_noise_multiplier(
                target_epsilon=dp.target_epsilon,
                target_delta=delta,
                sample_rate=rate,
                steps=steps,
                accountant=ACCOUNTANT,
            )
        except ValueError:
            raise UserError(
                f"train.dp.target_epsilon={dp.target_epsilon}: no noise multiplier reaches it in {steps} steps at "
                f"sampling rate {rate:.3g} and delta {delta:.3g}; raise target_epsilon or lower train.max_steps"
            ) from None
    return Privacy(float(noise), rate, delta, dp.max_grad_norm, windows, batch_size)


class PoissonWindows(Windows):
    """DP-SGD's examples, the non-overlapping windows: sample index s x windows + w is window w in step s + 1.
    A negative index stands in for an empty draw: a window whose every target is ignored, so the step adds
    noise alone, as DP-SGD's step on an empty batch does (the ledger does not count it)."""

    def __init__(self, stream: np.ndarray, block_size: int, steps: int, seed: int):
        per_step = len(stream) // block_size
        super().__init__(stream, block_size, steps * per_step, seed)
        self.per_step = per_step

    def offset(self, i: int) -> int:
        return (i % self.per_step) * self.block_size if i >= 0 else 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        if i < 0:
            item = {**item, "labels": torch.full_like(item["labels"], IGNORE_INDEX)}
        return item


class PoissonBatches(Sampler):
    """Step s's batch: each of the `windows` windows independently with probability `rate`, drawn from
    (seed, s) alone, so a resumed run draws the same batches."""

    def __init__(self, windows: int, rate: float, steps: int, seed: int):
        self.windows, self.rate, self.steps, self.seed = windows, rate, steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for s in range(self.steps):
            rng = np.random.default_rng((self.seed, s, POISSON_STREAM))
            chosen = np.flatnonzero(rng.random(self.windows) < self.rate)
            yield (s * self.windows + chosen).tolist() if len(chosen) else [-(s + 1)]


def private_loss(model: nn.Module, inputs: dict) -> torch.Tensor:
    """The mean over windows of each window's mean next-token loss, through the logits, so that a window's
    gradient depends on that window alone (a mean over the batch's tokens would not)."""
    input_ids, labels = inputs["input_ids"], inputs["labels"]  # [batch, time]
    batch, time = input_ids.shape
    positions = torch.arange(time, device=input_ids.device).expand(batch, time)  # [batch, time], not [1, time]
    logits = model(input_ids=input_ids, position_ids=positions).logits  # [batch, time, vocab]
    targets = labels[:, 1:]  # [batch, time - 1]
    losses = F.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # [batch, time - 1]
    counted = (targets != IGNORE_INDEX).sum(1)
    return (losses.sum(1) / counted.clamp_min(1)).mean()
