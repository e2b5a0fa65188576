"""Capacity (data=uniform; Morris et al. 2025): at the memorization cadence the bits the model holds of its
training set (capacity/bits_total, over every training sequence) and per parameter; before training the
training set's own information (capacity/dataset_bits: exact on data=uniform, else as eval.mia.reference
knows it). And train.saturation's stop rule, which ends a data=uniform run once its memorized bits stop
growing (`saturated`)."""

from __future__ import annotations

from gptfit.config.train import SaturationConfig, TrainConfig
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.bits import dataset_bits, parameter_counts, uniform_bits


def capacity_keys(model, bits: float) -> dict:
    """capacity/bits_total and capacity/bits_per_param of one evaluation on data=uniform."""
    return {"capacity/bits_total": bits, "capacity/bits_per_param": bits / parameter_counts(model)[0]}


def saturated(history: list[tuple[int, float]], window: float, growth: float) -> bool:
    """train.saturation's rule on the (step, bits) of every evaluation so far, the last one now: the most bits
    held at any evaluation grew by less than `growth` (relative) over the last `window` of the steps, that is
    since the last evaluation at or before (1 - window) x the last step. The running maximum, so that one noisy
    evaluation neither ends a run that still grows nor keeps one going. The evaluation it compares with must
    come after step 0, where nothing is memorized yet; bits that stay 0 never count as saturated (the cap,
    train.max_steps, ends such a run)."""
    step = history[-1][0]
    before = [b for s, b in history if 0 < s <= (1.0 - window) * step]
    return bool(before) and max(b for _, b in history) < (1.0 + growth) * max(before)


class Capacity(Measure):
    keys = ("capacity/bits_total", "capacity/bits_per_param")
    when = When.TABLE

    def __init__(self, setup: Setup):
        self.uniform, self.batch_size = setup.corpus.uniform, setup.eval.batch_size
        if self.uniform is not None:
            self.dataset_bits = -self.uniform.reference_log2() * len(self.uniform.train)
        elif setup.reference is not None:
            self.dataset_bits = dataset_bits(setup.reference, setup.corpus.train, setup.block_size, self.batch_size)
        else:
            self.dataset_bits = None
        self.bits_at: tuple[int, float] | None = None  # (step, capacity/bits_total) of the latest evaluation

    def at_start(self, model) -> dict:
        """What capacity/bits_per_param divides by, the count without the embedding tables, and the dataset bits."""
        row = dict(zip(("capacity/params", "capacity/params_non_embedding"), parameter_counts(model)))
        return {**row, "capacity/dataset_bits": self.dataset_bits} if self.dataset_bits is not None else row

    def bits(self, model, step: int, table=None) -> float:
        """capacity/bits_total at this step, computed once a step: the stop rule asks for it before the
        evaluation that logs it."""
        if self.bits_at is None or self.bits_at[0] != step:
            self.bits_at = (step, uniform_bits(model, self.uniform, table, self.batch_size))
        return self.bits_at[1]

    def __call__(self, ev: Evaluation) -> dict:
        if self.uniform is None:  # text: dataset bits alone, logged at the start
            return {}
        return capacity_keys(ev.model, self.bits(ev.model, ev.step, ev.table))


class Saturation:
    """train.saturation: stop at an evaluation step (before it is measured, so that it is the last) once the
    most memorized bits grew by less than `growth` over the last `window` of the steps, from `min_steps` on.
    `rows`: a resumed run's metrics rows, whose bits count."""

    summary_key = "saturated_at_step"  # where it stopped the run, in summary.json

    def __init__(self, rule: SaturationConfig, capacity: Capacity, rows: list[dict]):
        self.rule, self.capacity = rule, capacity
        self.history = [(r["step"], r["capacity/bits_total"]) for r in rows if "capacity/bits_total" in r]

    def should_stop(self, model, step: int) -> bool:
        bits = self.capacity.bits(model, step)
        self.history = [(s, b) for s, b in self.history if s < step] + [(step, bits)]
        return step >= self.rule.min_steps and saturated(self.history, self.rule.window, self.rule.growth)


def build(setup: Setup) -> Capacity | None:
    if setup.corpus.uniform is None and setup.eval.mia.reference is None:
        return None
    return Capacity(setup)


def stop_rule(train: TrainConfig, measures: list, rows: list[dict]) -> Saturation | None:
    """train.saturation's rule over the run's capacity measure; None when it is off."""
    capacity = next((m for m in measures if isinstance(m, Capacity)), None)
    if train.saturation.growth is None or capacity is None or capacity.uniform is None:
        return None
    return Saturation(train.saturation, capacity, rows)
