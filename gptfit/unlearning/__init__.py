"""Unlearning (unlearn.method): one module a method, registered here by its config name.

A method is a `Method` (base.py): a loss over a batch of retained windows and forget sequences, and what it
does once before the first step. The run that uses one is an ordinary run from the source run's model
(run/training.py), its data built by data.py and its attack at the end by relearn.py.
"""

from __future__ import annotations

from gptfit.config.unlearn import UnlearnConfig
from gptfit.unlearning.base import Method
from gptfit.unlearning.gradient_ascent import GradientAscent
from gptfit.unlearning.gradient_difference import GradientDifference
from gptfit.unlearning.localize import Localize
from gptfit.unlearning.npo import Npo
from gptfit.unlearning.retain import Retain

METHODS: dict[str, type[Method]] = {
    "gradient_ascent": GradientAscent,
    "gradient_difference": GradientDifference,
    "npo": Npo,
    "retain": Retain,
    "localize": Localize,
}


def build_method(unlearn: UnlearnConfig) -> Method:
    return METHODS[unlearn.method](unlearn)
