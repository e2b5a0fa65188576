"""General corpora (eval.general, resolved by gptfit.config.general_corpora): at every evaluation the loss and
bits per byte of each one's held-out text (general/<name>/loss, bpb) and forgetting/<name>, the loss's change
since step 0. Without general corpora (a run from scratch) nothing is measured or written."""

from __future__ import annotations

from gptfit.data.windows import fixed_windows
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.measures.losses import loss_keys
from gptfit.metrics.scoring import score_sequences


class GeneralLosses(Measure):
    keys = ("general/<name>/loss", "general/<name>/bpb", "forgetting/<name>")
    when = When.EACH

    def __init__(self, setup: Setup, texts: list):
        self.batch_size, self.token_bytes = setup.eval.batch_size, setup.corpus.token_bytes
        # name -> [windows, block_size] fixed windows of its held-out text, in eval.general's order
        self.windows = {
            text.name: fixed_windows(text.val, setup.block_size, c.windows) for text, c in zip(texts, setup.general)
        }
        self.start: dict[str, float] = {}  # name -> the starting model's loss (step 0)

    def __call__(self, ev: Evaluation) -> dict:
        row = {}
        for name, windows in self.windows.items():
            losses = score_sequences(ev.model, windows, self.batch_size).mean()  # [windows]
            keys = loss_keys(f"general/{name}", losses, windows, self.token_bytes)
            del keys[f"general/{name}/ppl"]  # loss and bpb say it all; the names table holds no ppl here
            row.update(keys)
            loss = keys[f"general/{name}/loss"]
            if ev.step == 0:
                self.start[name] = loss
            if name in self.start:
                row[f"forgetting/{name}"] = loss - self.start[name]
        return row

    def resume(self, first_row: dict) -> None:
        """A resumed run's starting losses, from its metrics row of step 0, so that its forgetting/<name> values
        equal an uninterrupted run's. A row of another step is ignored."""
        if first_row.get("step") != 0:
            return
        for name in self.windows:
            loss = first_row.get(f"general/{name}/loss")
            if isinstance(loss, (int, float)):
                self.start[name] = float(loss)


def build(setup: Setup) -> GeneralLosses | None:
    return GeneralLosses(setup, setup.general_held_out) if setup.general else None
