"""DP-SGD (train.dp; Abadi et al. 2016) through Opacus: per-window gradients, clipped and noised, on
Poisson-sampled batches, with Opacus's RDP accountant for epsilon.

The privacy unit is a training window: the training set is cut into its N non-overlapping windows of
model.block_size tokens (train.sampling=epochs's windows), and every step takes each window independently
with probability q = train.batch_size / N (`PoissonBatches`). Epsilon and delta are per window. A document
or a planted sequence is protected only as the group of the k windows it lies in (training with or without
all k; a sequence planted c times: c windows, up to 2c where copies straddle a window edge), and group
privacy bounds that group at (k x epsilon, k x e^((k-1) x epsilon) x delta): the chain of k training sets,
one window apart, adds delta x e^(i x epsilon) at link i. A bound on what an attacker can learn, not a
prediction of it.

Delta: null takes 1 / N^1.1 (`default_delta`), below 1 / N as the convention asks: a mechanism that
publishes each window in full with probability delta is (0, delta)-DP, and at delta >= 1 / N it publishes a
window or more in expectation, so an explicit delta that high is refused. 1e-5 is the other usual choice;
train.dp.delta sets any value below 1 / N. noise_multiplier=0 is clipping only, a control with no guarantee:
its epsilon is null (unbounded; JSON has no infinity), and `record()` says so.

Opacus loads only when DP-SGD is on: its hooks, optimizer and accountant are imported where they are
used (run/dp_hooks.py holds what gptfit adds to Opacus), because importing it costs a quarter of a second and
sets process-wide warning filters and grad samplers. Two things gptfit does here so that Opacus sees every
parameter, each checked by tests/test_privacy.py against gradients of single windows:
- position ids of shape [1, T] would give the position embedding a per-sample gradient of batch 1
  (Opacus issue 841): `private_loss` passes them expanded to [B, T];
- the fused output layer and loss of training (core/lm_loss.py) calls no nn.Linear, so Opacus's hooks would
  miss the output layer and the tied embedding's share through it: `private_loss` takes the logits path.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from gptfit.config import DpConfig
from gptfit.core.lm_loss import IGNORE_INDEX
from gptfit.data.windows import Windows
from gptfit.errors import UserError

ACCOUNTANT = "rdp"
POISSON_STREAM = 0xD9  # keeps the batches' random draws apart from the other uses of `seed`
DELTA_EXPONENT = 1.1  # null delta: 1 / N^1.1, below 1 / N by a factor N^0.1 that grows with the training set
DELTA_RULE = "1/N^1.1"
UNIT = "a training window of model.block_size tokens (the training set's non-overlapping windows)"
GROUPS = (
    "epsilon and delta are per window. A document or planted sequence is protected as the group of the k "
    "windows it lies in (a sequence planted c times: c windows, up to 2c where copies straddle a window edge): "
    "group privacy bounds the group at (k*epsilon, k*exp((k-1)*epsilon)*delta). A bound, not a prediction."
)
CLIPPING_ONLY = (
    "noise_multiplier 0: clipping and Poisson sampling only, a control with no privacy guarantee; epsilon is "
    "null from step 1 on (unbounded)"
)


def default_delta(units: int) -> float:
    """Delta when train.dp.delta is null: 1 / N^1.1 for N privacy units."""
    return float(units) ** -DELTA_EXPONENT


@contextlib.contextmanager
def rdp_bound_at_the_edge():
    """RDP's bound at the largest order it tries is still a valid (if looser) epsilon: not worth a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


@dataclass
class Privacy:
    """One run's DP-SGD: its noise, sampling rate, delta and clipping norm, and the accounting that follows."""

    noise_multiplier: float
    sample_rate: float  # q = batch_size / windows
    delta: float
    max_grad_norm: float
    windows: int  # the examples and privacy units: non-overlapping training windows
    batch_size: int  # the expected batch, q x windows
    block_size: int | None = None  # a unit's tokens
    delta_rule: str = "set"  # DELTA_RULE when delta came from null, "set" when train.dp.delta gave it

    def epsilon(self, steps: int) -> float | None:
        """Epsilon after `steps` steps at `delta`. None without noise: no finite epsilon holds, and None (null
        in JSON) rather than infinity, which json writes as `Infinity`, a token strict JSON readers refuse."""
        if steps == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return None
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, self.sample_rate, steps)]
        with rdp_bound_at_the_edge():
            return float(accountant.get_epsilon(self.delta))

    @property
    def clipping_only(self) -> bool:
        return self.noise_multiplier == 0

    def record(self) -> dict:
        """summary.json's `privacy`: what the run's epsilon is about (its unit) as well as the noise behind it."""
        return {
            "unit": UNIT,
            "unit_tokens": self.block_size,
            "units": self.windows,
            "noise_multiplier": self.noise_multiplier,
            "clipping_only": self.clipping_only,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "delta_rule": self.delta_rule,
            "max_grad_norm": self.max_grad_norm,
            "accountant": ACCOUNTANT,
            "meaning": CLIPPING_ONLY if self.clipping_only else GROUPS,
        }

    def attach(self, model: nn.Module) -> None:
        """Opacus's hooks on `model`'s layers. The Trainer keeps the plain model (its checkpoints and saves stay
        as they are); the hooks fill in `p.grad_sample` on every training backward."""
        from gptfit.run.dp_hooks import attach

        attach(model)

    def optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """`optimizer` wrapped by Opacus: per-window clipping, then noise, at every step."""
        from gptfit.run.dp_hooks import private_optimizer

        return private_optimizer(optimizer, self.noise_multiplier, self.max_grad_norm, self.batch_size)

    def loader(self, dataset, collate_fn, steps: int, seed: int) -> DataLoader:
        batches = PoissonBatches(self.windows, self.sample_rate, steps, seed)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=0)


def plan(dp: DpConfig, windows: int, batch_size: int, steps: int, block_size: int | None = None) -> Privacy:
    """The run's DP-SGD from train.dp over `windows` windows of `block_size` tokens; the noise multiplier from
    target_epsilon at `steps` when that is set."""
    if batch_size > windows:
        raise UserError(
            f"train.batch_size={batch_size}: DP-SGD takes each training window with probability batch_size / "
            f"windows, and the training set has only {windows} windows of model.block_size; lower "
            "train.batch_size or raise data.train_tokens"
        )
    # Refused, not warned: at delta >= 1/N the (epsilon, delta) guarantee allows a window published in full.
    if dp.delta is not None and dp.delta >= 1.0 / windows:
        raise UserError(
            f"train.dp.delta={dp.delta}: must be below 1 / N = {1.0 / windows:.3g}, N = {windows} training windows "
            f"(the privacy units); null takes 1 / N^{DELTA_EXPONENT} = {default_delta(windows):.3g}, or set e.g. 1e-5"
        )
    rate = batch_size / windows
    delta = dp.delta if dp.delta is not None else default_delta(windows)
    noise = dp.noise_multiplier
    if noise is None:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            with rdp_bound_at_the_edge():
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
    rule = "set" if dp.delta is not None else DELTA_RULE
    return Privacy(float(noise), rate, delta, dp.max_grad_norm, windows, batch_size, block_size, rule)


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
