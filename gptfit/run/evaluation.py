"""The evaluator: the run's measures (gptfit/measures/, built from its config when the run starts) called at
each evaluation when their cadence is due, in the registry's order.

Everything measured is fixed when the run starts (windows, prompts, the training-text n-gram index), so two
evaluations differ only by the model. The k-th evaluation is counted by step, not by count, so that a resumed
run keeps the same cadence. Only rank 0 evaluates: the other ranks of a multi-process run get `NoEvaluator`.
"""

from __future__ import annotations

from typing import TypeVar

from gptfit.config import TrainConfig
from gptfit.measures import REGISTRY, STOP_RULES
from gptfit.measures.base import Evaluation, Measure, Setup, When

M = TypeVar("M", bound=Measure)


class Evaluator:
    def __init__(self, setup: Setup):
        self.eval, self.eval_every = setup.eval, setup.eval_every
        self.measures: list[Measure] = [m for build in REGISTRY if (m := build(setup)) is not None]

    def measure_of(self, kind: type[M]) -> M | None:
        """The run's measure of this class, None where the run does not measure it."""
        return next((m for m in self.measures if isinstance(m, kind)), None)

    def due(self, step: int, final: bool) -> set[When]:
        index = step // self.eval_every
        due = {When.EACH}
        if final or index % self.eval.memorization_every == 0:
            due.add(When.TABLE)
        if final or index % self.eval.generation_every == 0:
            due.add(When.SAMPLES)
        return due

    def __call__(self, model, step: int, final: bool = False, exposure=None) -> tuple[dict, Evaluation]:
        """One evaluation's metrics row, and the evaluation itself: its per-sequence table (None when not
        measured), samples and figures."""
        return self.measure(Evaluation(model, step, final, exposure), self.due(step, final))

    def table_only(self, model, step: int, exposure, final: bool = True) -> tuple[dict, Evaluation]:
        """The memorization-cadence measures alone (best/'s table at the end, as the last evaluation)."""
        return self.measure(Evaluation(model, step, final, exposure), {When.TABLE})

    def measure(self, ev: Evaluation, due: set[When]) -> tuple[dict, Evaluation]:
        row = {}
        for measure in self.measures:
            if measure.when in due:
                row.update(measure(ev))
        return row, ev

    def at_start(self, model) -> dict:
        """The keys known before training, for the summary."""
        return {k: v for m in self.measures for k, v in m.at_start(model).items()}

    def resume(self, first_row: dict) -> None:
        """A resumed run's first metrics row, for the measures that count from step 0."""
        for measure in self.measures:
            measure.resume(first_row)

    def stop_rules(self, train: TrainConfig, rows: list[dict]) -> list:
        """The rules that may end training at an evaluation step (before it is measured); `rows`: a resumed
        run's metrics rows."""
        return [rule for make in STOP_RULES if (rule := make(train, self.measures, rows)) is not None]


class NoEvaluator(Evaluator):
    """The evaluator of ranks other than 0: measures nothing, stops nothing."""

    def __init__(self):
        self.measures = []

    def __call__(self, model, step: int, final: bool = False, exposure=None) -> tuple[dict, Evaluation]:
        return {}, Evaluation(model, step, final, exposure)
