"""Loss measured the same way on training and held-out windows: nats per token, perplexity, bits per byte."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def token_losses(model, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[n, block_size - 1] next-token losses (nats), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for batch in windows.split(batch_size):
            batch = batch.to(device)
            logits = model(input_ids=batch).logits[:, :-1].float()  # [b, T-1, vocab]
            loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # [b, T-1]
            out.append(loss.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def loss_metrics(model, windows: torch.Tensor, token_bytes: np.ndarray, batch_size: int, prefix: str) -> dict:
    losses = token_losses(model, windows, batch_size)
    nats = float(losses.sum())
    n_bytes = int(token_bytes[windows[:, 1:].numpy()].sum())
    mean = nats / losses.numel()
    return {
        f"{prefix}/loss": mean,
        f"{prefix}/ppl": math.exp(min(mean, 50.0)),
        f"{prefix}/bpb": nats / (math.log(2) * max(n_bytes, 1)),
    }
