"""The output layer and its cross-entropy in one step, without the [tokens, vocab] logits of the batch.

Training needs only the loss and its gradients from the output layer. `linear_cross_entropy` works
through the tokens a chunk of rows at a time: it computes the chunk's logits, turns them in place into
the gradient of the mean loss (softmax minus the one-hot target, over the number of counted targets),
and multiplies that into the gradients of the hidden states and the weight right away. The backward pass
only scales the two stored gradients by the incoming one.

Compared with `F.cross_entropy(lm_head(h))`, the log-softmax output, the zero-filled gradient of the
negative log-likelihood and the log-softmax backward are never written out: a chunk of logits stays in the
CPU's cache, and the largest tensor of a step (tokens x vocab, 3.3 GB at batch 64 x 256 with GPT-2's
vocabulary) never exists. bench/train_throughput.py measures the effect on a step's time,
bench/lm_loss_memory.py on its memory.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # targets with this value count for nothing, as in F.cross_entropy
CHUNK_ELEMENTS = 1 << 20  # logits per chunk (4 MB in fp32) ...
MIN_CHUNK_ROWS = 256  # ... but never so few rows that the weight is re-read for every handful of tokens


def chunk_rows(tokens: int, vocab: int) -> int:
    """Rows per chunk: at most the budget, split evenly (768 tokens at vocab 2048: two chunks of 384)."""
    chunks = -(-tokens // max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // vocab))
    return -(-tokens // chunks)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:
        # hidden [tokens, n_embd], weight [vocab, n_embd], targets [tokens]
        device = hidden.device.type
        # Under autocast the matmuls run in its dtype, as the output layer would; the softmax runs in fp32.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        with torch.autocast(device, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            counted = targets != IGNORE_INDEX
            n = counted.sum()
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, h.shape[0], rows):
                h_c, t_c = h[start : start + rows], targets[start : start + rows].clamp_min(0)
                keep = counted[start : start + rows, None].float()
                logits = torch.mm(h_c, w.t()).float()  # [rows, vocab]
                top = logits.amax(1, keepdim=True)
                target_logit = logits.gather(1, t_c[:, None])
                probs = logits.sub_(top).exp_()  # in place: unnormalised probabilities
                z = probs.sum(1, keepdim=True)
                total += ((z.log() + top - target_logit) * keep).sum()
                # d(mean loss)/d(logits) = (softmax - one_hot(target)) / n on counted rows, 0 on the others
                grad = probs.mul_(keep / (z * n))
                grad.scatter_add_(1, t_c[:, None], -keep / n)
                grad = grad.to(dtype)
                if dtype == hidden.dtype:
                    torch.mm(grad, w, out=grad_hidden[start : start + rows])
                else:
                    grad_hidden[start : start + rows] = torch.mm(grad, w)
                if dtype == torch.float32:
                    grad_weight.addmm_(grad.t(), h_c)
                else:
                    grad_weight += torch.mm(grad.t(), h_c)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets` (IGNORE_INDEX skipped), for training.

    The same value and gradients as `F.cross_entropy(F.linear(hidden, weight), targets)`. It does the
    backward work during the forward pass, so use it only where the gradient will be taken.
    """
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows(hidden.shape[0], weight.shape[0]))
