"""What happens at the Trainer's step boundaries: gptfit's evaluations, the non-finite-loss guard, stop
signals and the checkpoint marker. `Run` measures and writes; `RunCallback` calls it from the Trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from gptfit import keys
from gptfit.config import TrainConfig
from gptfit.data.corpus import Corpus
from gptfit.errors import UserError
from gptfit.files import BEST_MODEL, MIA_ROC
from gptfit.metrics import membership
from gptfit.model.finetune import plain_model
from gptfit.plots.membership import roc_figure
from gptfit.run import distributed as dist
from gptfit.run.checkpoints import find_checkpoint, save_model_atomic, write_marker
from gptfit.run.evaluation import Evaluator
from gptfit.run.exposure import FILE as LEDGER_FILE
from gptfit.run.exposure import ExposureLedger, write_ledger
from gptfit.run.signals import StopSignals
from gptfit.run.tracking import NoTracker, Tracker
from gptfit.run.trainer import GptfitTrainer

# The keys of a metrics row that the run itself writes; every other key is a measure's (gptfit/measures/).
RUN_KEYS = ("step", "tokens_seen", "epoch", "train/lr", "train/running_loss")


class Run:
    """Everything one run measures and writes; the Trainer drives it through `RunCallback`."""

    def __init__(
        self,
        train: TrainConfig,
        run_dir: Path,
        corpus: Corpus,
        model,
        tokenizer,
        evaluator: Evaluator,
        tracker: Tracker | NoTracker,
        ledger: ExposureLedger,
        block_size: int,
    ):
        self.train, self.run_dir, self.corpus, self.ledger = train, run_dir, corpus, ledger
        self.model, self.tokenizer, self.tracker = model, tokenizer, tracker
        # Only rank 0 evaluates and writes (the other ranks of a multi-process run get a NoEvaluator and a
        # NoTracker).
        self.evaluator = evaluator
        self.tokens_per_step = train.batch_size * block_size
        best = tracker.best(keys.VAL_LOSS)
        self.best_val = best["value"] if best else float("inf")
        self.trainer: GptfitTrainer | None = None
        self.stopped_at: int | None = None
        self.start = time.time()
        self.eval_seconds = 0.0
        self.first_step_at: float | None = None
        self.best_exposure = None
        # The rules that may end training early, a resumed run's rows counted
        self.stop_rules = evaluator.stop_rules(train, tracker.rows)

    def stopping_rules(self, model, step: int) -> list:
        """The stop rules that end training at this evaluation step, asked before the evaluation (which is then
        the last); each says in the summary where it stopped the run (its `summary_key`)."""
        return [rule for rule in self.stop_rules if rule.should_stop(model, step)]

    def evaluate(
        self, model, step: int, exposure, lr: float | None = None, running: float | None = None, final: bool = False
    ) -> dict:
        """exposure: the ledger's (starts, last_seen) over every rank, up to this step. final: the run's last
        evaluation (at train.max_steps, or where a stop rule ends the run)."""
        started = time.time()
        tokens_seen = step * self.tokens_per_step
        row = {"step": step, "tokens_seen": tokens_seen, "epoch": tokens_seen / len(self.corpus.train)}
        measured, ev = self.evaluator(model, step, final=final, exposure=exposure)
        row.update(measured)
        if lr is not None:
            row["train/lr"] = lr
        if running is not None:
            row["train/running_loss"] = running
        self.tracker.log(row)  # W&B's row of this evaluation: what follows goes into it
        if ev.figures:
            self.tracker.log_figures(ev.figures)
        if ev.notes:
            self.tracker.update(**ev.notes)
        self.tracker.log_samples(ev.samples)
        if ev.table is not None:
            self.tracker.log_sequences(ev.table, final)
            self.membership_notes(ev.table, final, step)
        if row[keys.VAL_LOSS] < self.best_val:
            self.best_val = row[keys.VAL_LOSS]
            save_model_atomic(plain_model(model), self.tokenizer, self.run_dir / BEST_MODEL)
            self.best_exposure = exposure  # what best/ had seen, for its table at the end (run/early_stopping.py)
        self.eval_seconds += time.time() - started
        line = f"step {step:>6}/{self.train.max_steps} | train {row['train/loss']:.3f} | val {row['val/loss']:.3f}"
        line += f" | gap {row['gap']:+.3f}"
        if keys.MIA_AUC in row:
            line += f" | extract {row['mem/extraction_rate_train']:.2f} | auc {row['mem/mia_auc']:.2f}"
        tqdm.write(f"{line} | {time.time() - self.start:.0f}s")
        return row

    def membership_notes(self, table, final: bool, step: int) -> None:
        """Why some mia/ figures are null (in summary.json), and at the end the ROC of every score."""
        reasons = membership.null_reasons(table)
        if reasons:
            self.tracker.update(mia_null=reasons)
        if final:
            rows = membership.ordinary(table)
            fig = roc_figure(
                membership.roc_points(rows),
                membership.nonmembers(rows),
                f"membership inference at step {step}",
            )
            fig.savefig(self.run_dir / MIA_ROC)
            self.tracker.log_figures({"mia/roc": fig})


class RunCallback(TrainerCallback):
    """Evaluations, the non-finite-loss guard and stop signals, at step boundaries of the Trainer."""

    def __init__(self, run: Run, stop: StopSignals):
        self.run, self.stop = run, stop

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and self.run.tracker.writes:
            self.run.evaluate(model, 0, (self.run.ledger.base_starts, self.run.ledger.base_last_seen))

    def on_step_begin(self, args, state, control, **kwargs):
        if self.run.first_step_at is None:  # when the training loop proper began (bench/e2e.py reads it)
            self.run.first_step_at = time.time()
            self.run.tracker.update(first_step_at=self.run.first_step_at)

    def on_step_end(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        step, run = state.global_step, self.run
        diverged, stop = dist.any_rank(not run.trainer.pop_finite(), self.stop.received is not None)
        if diverged:  # before anything is saved: the checkpoints on disk are the last good ones
            lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else run.train.lr
            kept = find_checkpoint(run.run_dir)
            raise UserError(
                f"train/loss is not finite at step {step} (learning rate {lr:.3g}): training diverged; "
                f"lower train.lr={run.train.lr:g} or raise train.warmup_steps; last good checkpoint: "
                f"{kept or 'none'}"
            )
        run.ledger.settle(step)  # the windows of this step count from now on
        if step % run.train.eval_every == 0 or step >= state.max_steps:
            running = run.trainer.pop_running_loss()  # collectives: every rank takes part
            exposure = run.ledger.totals()
            rules = run.stopping_rules(model, step)
            (stopping,) = dist.any_rank(bool(rules))
            if run.tracker.writes:
                lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None
                run.evaluate(model, step, exposure, lr, running, final=stopping or step >= state.max_steps)
            if stopping and step < state.max_steps:
                control.should_training_stop = True
                run.tracker.update(**{rule.summary_key: step for rule in rules})
        if stop:
            control.should_save = True
            control.should_training_stop = True
            run.stopped_at = step

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        starts, last_seen = self.run.ledger.totals()  # a collective: every rank takes part
        if ckpt.is_dir() and state.is_world_process_zero:
            # The ledger before the marker: a checkpoint that counts holds the exposures of its steps.
            write_ledger(ckpt / LEDGER_FILE, starts, last_seen, self.run.ledger.block_size)
            trainer = self.run.trainer
            write_marker(
                ckpt,
                state.global_step,
                self.run.tracker.summary.get("wandb_id"),
                float(trainer.loss_sum),
                trainer.loss_steps,
            )
