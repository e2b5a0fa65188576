"""General corpora (eval.general, resolved by gptfit.config.general_corpora): at every evaluation the loss, bits
per byte and top-1 next-token accuracy of each one's held-out text (general/<name>/loss, bpb, acc), and their
change since step 0: forgetting/<name>, the loss minus the starting model's, and forgetting_acc/<name>, the
starting model's accuracy minus the current one (both above 0 when general ability is lost). The accuracy's
change is named forgetting_acc/<name>, not forgetting/<name>/acc: forgetting/<name> is already a key, and a
key that is also the prefix of others is what W&B's panels and the readers of forgetting/<name> mishandle.
The accuracy comes from the scoring pass that gives the loss. Without general corpora (a run from scratch)
nothing is measured or written."""

from __future__ import annotations

from gptfit.data.windows import fixed_windows
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.measures.losses import loss_keys
from gptfit.metrics.scoring import score_sequences


class GeneralLosses(Measure):
    keys = (
        "general/<name>/loss",
        "general/<name>/bpb",
        "general/<name>/acc",
        "forgetting/<name>",
        "forgetting_acc/<name>",
    )
    when = When.EACH

    def __init__(self, setup: Setup, texts: list):
        self.batch_size, self.token_bytes = setup.eval.batch_size, setup.corpus.token_bytes
        # name -> [windows, block_size] fixed windows of its held-out text, in eval.general's order
        self.windows = {
            text.name: fixed_windows(text.val, setup.block_size, c.windows) for text, c in zip(texts, setup.general)
        }
        self.start: dict[str, tuple[float, float | None]] = {}  # name -> the starting model's (loss, acc) (step 0)

    def __call__(self, ev: Evaluation) -> dict:
        row = {}
        for name, windows in self.windows.items():
            scores = score_sequences(ev.model, windows, self.batch_size)
            keys = loss_keys(f"general/{name}", scores.mean(), windows, self.token_bytes)  # from [windows] losses
            del keys[f"general/{name}/ppl"]  # loss and bpb say it all; the names table holds no ppl here
            # Every window has as many targets, so the mean of the windows' hit rates is the share of all targets.
            keys[f"general/{name}/acc"] = float(scores.hit_rate().mean())
            row.update(keys)
            loss, acc = keys[f"general/{name}/loss"], keys[f"general/{name}/acc"]
            if ev.step == 0:
                self.start[name] = (loss, acc)
            if name in self.start:
                row[f"forgetting/{name}"] = loss - self.start[name][0]
                if self.start[name][1] is not None:  # None: resumed from a run that logged no accuracy
                    row[f"forgetting_acc/{name}"] = self.start[name][1] - acc
        return row

    def resume(self, first_row: dict) -> None:
        """A resumed run's starting loss and accuracy, from its metrics row of step 0, so that its forgetting
        keys equal an uninterrupted run's. A row of another step is ignored; a step-0 row without the
        accuracy (a run from before general/<name>/acc) gives forgetting/<name> alone."""
        if first_row.get("step") != 0:
            return
        for name in self.windows:
            loss, acc = first_row.get(f"general/{name}/loss"), first_row.get(f"general/{name}/acc")
            if isinstance(loss, (int, float)):
                self.start[name] = (float(loss), float(acc) if isinstance(acc, (int, float)) else None)


def build(setup: Setup) -> GeneralLosses | None:
    return GeneralLosses(setup, setup.general_held_out) if setup.general else None
