"""`eval_mode`: a model in eval mode for a block of code, then back in the mode it was in."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def eval_mode(model):
    """No dropout inside the block; the model's own mode (training or not) is restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
