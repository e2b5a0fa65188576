"""The relearning attack (Hu et al. 2024; Lynch et al. 2024): a few steps of fine-tuning on half of the forget
set, or on as much other text, and then the other half measured. Unlearning that only hid the text lets it
come back faster than it comes back into a model that never saw it (the retrained model, attacked alike)."""

from __future__ import annotations

import copy

import torch

from gptfit.metrics.sequences import decoded_matches
from gptfit.unlearning.base import mean_nll

GREEDY = {"do_sample": False, "num_beams": 1}


def extraction(model, tokens: torch.Tensor, prefix: int, batch_size: int) -> tuple[float, float]:
    """(share of `tokens` whose greedy suffix after `prefix` tokens is exactly theirs, their mean loss)."""
    model.eval()
    with torch.no_grad():
        exact = decoded_matches(model, tokens, prefix, GREEDY, batch_size, seed=0).all(dim=1)  # [n]
        loss = sum(float(mean_nll(model, b)) * len(b) for b in tokens.split(batch_size)) / len(tokens)
    return float(exact.float().mean()), loss


def attack(
    model, train_on: torch.Tensor, measured: torch.Tensor, steps: int, lr: float, prefix: int, batch_size: int
) -> list[dict]:
    """A copy of `model` fine-tuned `steps` steps with AdamW on `train_on` ([n, L], whole, every step);
    [{step, extraction, loss}] of `measured` at step 0 and then every step. The model itself is untouched."""
    attacked = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(attacked.parameters(), lr=lr, weight_decay=0.0)
    device = next(attacked.parameters()).device
    train_on, measured = train_on.to(device), measured.to(device)
    curve = []
    for step in range(steps + 1):
        rate, loss = extraction(attacked, measured, prefix, batch_size)
        curve.append({"step": step, "extraction": rate, "loss": loss})
        if step == steps:
            break
        attacked.train()
        optimizer.zero_grad(set_to_none=True)
        mean_nll(attacked, train_on).backward()
        optimizer.step()
    return curve
