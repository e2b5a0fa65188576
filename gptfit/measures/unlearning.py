"""What an unlearning run (unlearn.method) measures beyond the forget set's own keys (forget/extraction_rate,
forget/suffix_match, forget/loss, from the table): how far the forget set is from text never seen, and from
the model retrained without it, at every memorization evaluation.

- `forget/mia/<score>/...`: the forget set (members) against the table's held-out sequences (non-members)
  under each membership score: AUC and TPRs, with their intervals and the AUC's p-value at every evaluation
  (the retrained model's, once, in summary.json's `retrained`). 0.5 is the goal; below
  it the forget set stands out by being less likely than never-seen text (the "Streisand effect").
- `forget/privleak/<score>`: MUSE's privacy leakage, (AUC - AUC_retrained) / AUC_retrained on the same
  sequences, as a fraction: 0 where the model is as the retrained one, above 0 where it still singles the
  forget set out, below 0 over-unlearned. MUSE reports it in percent, with Min-K% (k = 40%), and its code's
  AUC runs the other way, so a model that still remembers gets a negative figure there.
- `forget/quality`: the p-value of a two-sample Kolmogorov-Smirnov test between the forget set's
  per-sequence losses under this model and under the retrained one. TOFU's forget quality runs the test on
  truth ratios, which need paraphrased answers; the loss stands in for them here. High: indistinguishable.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import ks_2samp

from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.measures.table import SequenceTable
from gptfit.metrics import membership
from gptfit.model.loading import load_model


def forget_against_heldout(table: pa.Table) -> pa.Table:
    """The forget set's rows as members (split "train") and the ordinary held-out rows as non-members."""
    forget = table.filter(pc.equal(table["kind"], "forget"))
    heldout = table.filter(pc.and_(pc.equal(table["kind"], "sample"), pc.equal(table["split"], "val")))
    return pa.concat_tables([forget, heldout])  # the forget rows are split "train" already


def mean(column) -> float | None:
    return float(np.mean(np.asarray(column, dtype=np.float64))) if len(column) else None


def forget_losses(table: pa.Table) -> np.ndarray:
    return np.asarray(table.filter(pc.equal(table["kind"], "forget"))["loss"], dtype=np.float64)


class Unlearning(Measure):
    keys = ("forget/mia/<name>/<name>", "forget/privleak/<name>", "forget/quality")
    when = When.TABLE

    def __init__(self, setup: Setup):
        self.scorer = SequenceTable(setup)  # the run's own sides and scores, for the retrained model
        self.path = setup.unlearn.retrained
        self.resamples, self.seed = setup.eval.mia.bootstrap, setup.split_seed
        self.retrained: pa.Table | None = None  # the retrained model's table, scored once
        self.theirs: dict = {}  # its forget-against-held-out membership figures

    def score_retrained(self, ev: Evaluation) -> None:
        """The retrained model's table, once; its own forget-set figures go into summary.json (`retrained`)."""
        device = next(ev.model.parameters()).device
        self.retrained = self.scorer.score(load_model(self.path).to(device).eval(), 0)
        self.theirs = membership.aggregates(forget_against_heldout(self.retrained), self.resamples, self.seed)
        table = self.retrained
        forget = table.filter(pc.equal(table["kind"], "forget"))
        trained = table.filter(pc.and_(pc.equal(table["kind"], "sample"), pc.equal(table["split"], "train")))
        own = {
            "forget/extraction_rate": mean(forget["extracted"]),
            "forget/loss": mean(forget["loss"]),
            "mem/extraction_rate_train": mean(trained["extracted"]),
        }
        ev.notes["retrained"] = own | {f"forget/{k}": v for k, v in self.theirs.items()}

    def __call__(self, ev: Evaluation) -> dict:
        if self.retrained is None:
            self.score_retrained(ev)
        theirs = self.theirs
        # Intervals at every evaluation, not only the last: the point a study reads (the first step at which
        # extraction is gone) is one of the middle ones. On 32 + 1,000 sequences they cost about 0.1 s a score.
        ours = membership.aggregates(forget_against_heldout(ev.table), self.resamples, self.seed)
        out = {f"forget/{key}": value for key, value in ours.items()}
        for key, value in ours.items():
            name, figure = key.split("/")[1:]
            if figure == "auc" and theirs.get(key):  # the point estimates' ratio; no interval of its own
                out[f"forget/privleak/{name}"] = (value - theirs[key]) / theirs[key]
        out["forget/quality"] = float(ks_2samp(forget_losses(ev.table), forget_losses(self.retrained)).pvalue)
        return out


def build(setup: Setup) -> Unlearning | None:
    return Unlearning(setup) if setup.unlearn is not None and setup.unlearn.on else None
