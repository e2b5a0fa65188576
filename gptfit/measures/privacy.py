"""DP-SGD's spend (train.dp) at every evaluation: privacy/epsilon, the RDP accountant's epsilon after the
steps so far at the run's delta (run/privacy.py plans the noise and holds the accountant)."""

from __future__ import annotations

from gptfit.measures.base import Evaluation, Measure, Setup, When


class Epsilon(Measure):
    keys = ("privacy/epsilon",)
    when = When.EACH

    def __init__(self, privacy):
        self.privacy = privacy

    def __call__(self, ev: Evaluation) -> dict:
        return {"privacy/epsilon": self.privacy.epsilon(ev.step)}


def build(setup: Setup) -> Epsilon | None:
    return Epsilon(setup.privacy) if setup.privacy is not None else None
