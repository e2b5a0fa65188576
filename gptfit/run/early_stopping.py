"""Early stopping as a mitigation: `best/`, the model at the lowest val/loss, scored at the end on the same
per-sequence table as the final model, so a run says what stopping at its best step would have left
memorized: `sequences_best.parquet` and the summary's `early_stopping` (the keys of the memorization-cadence
measures: mem/, mia/, dup/ and the planted parts').
"""

from __future__ import annotations

import pyarrow.parquet as pq

from gptfit import keys
from gptfit.files import BEST_MODEL, SEQUENCES_BEST, atomic
from gptfit.model.loading import load_model
from gptfit.run.callback import Run


def score_best(run: Run, device) -> None:
    """Score best/ like the last evaluation scored the final model (the intervals bootstrapped too)."""
    best = run.tracker.best(keys.VAL_LOSS)
    folder = run.run_dir / BEST_MODEL
    if best is None or not folder.is_dir():
        return
    # A run resumed after its best step lost that step's ledger: its exposure columns are the final ones.
    exposure = run.best_exposure if run.best_exposure is not None else run.ledger.totals()
    model = load_model(str(folder)).to(device).eval()
    row, ev = run.evaluator.table_only(model, best["step"], exposure)
    with atomic(run.run_dir / SEQUENCES_BEST) as tmp:
        pq.write_table(ev.table, tmp)
    run.tracker.update(early_stopping={"step": best["step"], **row})
