"""A privacy audit in one training run (data.audit; Steinke, Nasr and Jagielski 2023): at the last evaluation
each audit sequence is scored by the model (its mean token log-probability), and the guesses on the highest
and lowest scores give `privacy/epsilon_lower`, a 95% lower bound on the epsilon the training run spent
(gptfit.metrics.audit), beside the accountant's `privacy/epsilon` where the run trains with DP-SGD. The
summary's `audit` says what the bound rests on."""

from __future__ import annotations

import numpy as np

from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.audit import epsilon_lower_bound, guesses
from gptfit.metrics.scoring import score_sequences


class Audit(Measure):
    keys = ("privacy/epsilon_lower",)
    when = When.TABLE

    def __init__(self, setup: Setup):
        self.audit, self.eot_id = setup.corpus.audit, setup.corpus.eot_id
        self.k = setup.corpus.audit.guesses  # fixed by the config, before any score is seen
        self.batch_size = setup.eval.batch_size
        # Without DP-SGD the bound is on pure DP (delta 0): there is no delta to spend.
        self.delta = setup.privacy.delta if setup.privacy is not None else 0.0

    def __call__(self, ev: Evaluation) -> dict:
        if not ev.final:
            return {}
        m = len(self.audit.tokens)
        ids = np.hstack([np.full((m, 1), self.eot_id), self.audit.tokens])  # [m, 1 + L] each read as a document
        scores = -score_sequences(ev.model, ids, self.batch_size).mean().numpy()  # [m] higher: more likely in
        r, v = guesses(scores, self.audit.included, self.k, self.k)
        bound = epsilon_lower_bound(r, v, m, self.delta)
        ev.notes["audit"] = {
            "sequences": m,
            "included": int(self.audit.included.sum()),
            "guesses": r,
            "correct": v,
            "delta": self.delta,
            "epsilon_lower": bound,
            "confidence": 0.95,
        }
        return {"privacy/epsilon_lower": bound}


def build(setup: Setup) -> Audit | None:
    return Audit(setup) if setup.corpus.audit is not None else None
