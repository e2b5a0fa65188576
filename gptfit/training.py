"""One training run: data, model, the Hugging Face Trainer, gptfit's evaluations, checkpoints, tracking.

The Trainer owns the optimizer step (AdamW, warm-up + cosine, clipping, accumulation, devices,
checkpoints with optimizer/scheduler/RNG state). Its own reporting is off: gptfit measures and logs its
own keys at step 0 and every `train.eval_every` steps through a callback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from gptfit import distributed as dist
from gptfit.data.corpus import Corpus, load_corpus, ngram_overlap
from gptfit.data.windows import RandomWindows
from gptfit.errors import UserError
from gptfit.evaluation import Evaluator
from gptfit.models import build_model, load_tokenizer, model_context, pretrained_path
from gptfit.plots import loss_curves, memorization_curves
from gptfit.tracking import Tracker

log = logging.getLogger(__name__)
COMPLETE = "gptfit_complete.json"  # written into a checkpoint after everything else: only then it counts


class TrainingStopped(Exception):
    """A stop signal was honoured: a complete checkpoint is saved and the run can be resumed."""

    def __init__(self, message: str, forward=None):
        super().__init__(message)
        self.forward = forward  # hands the signal on to the handler installed before gptfit's


class StopSignals:
    """SIGTERM, and SIGUSR2 (what SLURM/submitit send before preemption or the time limit), ask the run
    to save a checkpoint at the next step boundary and stop. The handlers that were installed before
    (submitit's requeue) are restored afterwards and can be called with `forward`."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: Optional[int] = None
        self.previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            log.warning("%s received: saving a checkpoint at the next step, then stopping",
                        signal.Signals(signum).name)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        handler = self.previous.get(self.received)
        if callable(handler):
            handler(self.received, None)


def unreadable(ckpt: Path) -> Optional[str]:
    """Why a checkpoint cannot be resumed from (a missing marker, a cut or corrupt file), or None.

    Tensors are read as safetensors; the Trainer's optimizer, scheduler and RNG states with
    `torch.load(weights_only=True)`, which refuses pickles that would run code."""
    from safetensors import safe_open
    from transformers.trainer_pt_utils import safe_globals  # the numpy RNG types the Trainer allows

    try:
        marker = json.loads((ckpt / COMPLETE).read_text())
        int(marker["step"])
        json.loads((ckpt / "trainer_state.json").read_text())
        weights = sorted(ckpt.glob("*.safetensors"))
        if not weights:
            return "no model.safetensors"
        for f in weights:
            with safe_open(str(f), "pt") as st:
                for key in st.keys():
                    st.get_slice(key)
        for f in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth")]):
            with safe_globals():
                torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} missing" if e.filename else "a file is missing"
    except Exception as e:  # torch and safetensors raise several types for cut or tampered files
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return None


def find_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint of a run; half-written or corrupt ones are skipped with a warning."""
    candidates = []
    for ckpt in (run_dir / "checkpoints").glob("checkpoint-*"):
        try:
            candidates.append((int(ckpt.name.split("-")[-1]), ckpt))
        except ValueError:
            continue
    for _, ckpt in sorted(candidates, reverse=True):
        problem = unreadable(ckpt)
        if problem is None:
            return ckpt
        warnings.warn(f"skipping incomplete or corrupt checkpoint {ckpt} ({problem})")
    return None


def save_model_atomic(model, tokenizer, target: Path) -> None:
    """Write into a temporary folder, then swap it in: a kill never leaves a half-written model."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


class GptfitTrainer(Trainer):
    """The Trainer, plus a running sum of the training loss between evaluations and bf16 training.

    With precision="bf16" the training forward runs under autocast (the backward follows its dtypes).
    This is done here rather than with TrainingArguments(bf16=True), which makes accelerate wrap the
    model's forward itself, so that every evaluation would run in bf16 too.
    """

    def __init__(self, *args, precision: str = "fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast_bf16 = precision == "bf16"
        self.flops_per_token: Optional[int] = None
        self.loss_sum = torch.zeros(())
        self.loss_steps = 0
        self.finite = torch.ones((), dtype=torch.bool)  # every micro-step's loss since the last check

    def floating_point_ops(self, inputs) -> int:
        # The Trainer's count for total_flos (6 x tokens x non-embedding parameters), asked for at every
        # step; the parameter count walks every module, so it is taken once.
        if self.flops_per_token is None:
            self.flops_per_token = 6 * self.model.num_parameters(exclude_embeddings=True)
        return self.flops_per_token * inputs["input_ids"].numel()

    def compute_loss(self, model, inputs, *args, **kwargs):
        device = self.args.device.type
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            return super().compute_loss(model, inputs, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Already divided by the accumulation steps, so micro-steps add up to the step's mean loss.
        self.loss_sum = self.loss_sum.to(loss.device) + loss
        self.loss_steps += 1
        self.finite = self.finite.to(loss.device) & torch.isfinite(loss.detach())
        return loss

    def pop_finite(self) -> bool:
        finite = bool(self.finite)
        self.finite = torch.ones((), dtype=torch.bool)
        return finite

    def pop_running_loss(self) -> Optional[float]:
        """The mean training loss since the last call, over all ranks (every rank calls it together)."""
        if self.loss_steps == 0:
            return None
        value = float(self.loss_sum) * self.args.gradient_accumulation_steps / self.loss_steps
        self.loss_sum, self.loss_steps = torch.zeros(()), 0
        return dist.mean(value)


class Run:
    """Everything one run measures and writes; the Trainer drives it through `RunCallback`."""

    def __init__(self, cfg, run_dir: Path, corpus: Corpus, model, tokenizer, tracker: Tracker):
        self.cfg, self.run_dir, self.corpus = cfg, run_dir, corpus
        self.model, self.tokenizer, self.tracker = model, tokenizer, tracker
        # Only rank 0 evaluates and writes (tracker is None on the other ranks of a multi-process run).
        self.evaluator = Evaluator(cfg, corpus, tokenizer) if tracker is not None else None
        self.tokens_per_step = cfg.train.batch_size * cfg.model.block_size
        best = tracker.best("val/loss") if tracker is not None else None
        self.best_val = best["value"] if best else float("inf")
        self.trainer: Optional[GptfitTrainer] = None
        self.stopped_at: Optional[int] = None
        self.start = time.time()
        self.eval_seconds = 0.0

    def evaluate(self, model, step: int, lr: Optional[float] = None, running: Optional[float] = None) -> dict:
        started = time.time()
        cfg = self.cfg
        tokens_seen = step * self.tokens_per_step
        row = {"step": step, "tokens_seen": tokens_seen, "epoch": tokens_seen / len(self.corpus.train)}
        measured, samples = self.evaluator(model, step, final=step >= cfg.train.max_steps)
        row.update(measured)
        if cfg.eval.attention:
            attn_row, figures = self.evaluator.attention(model)
            row.update(attn_row)
            self.tracker.log_figures(figures, tokens_seen)
        if lr is not None:
            row["train/lr"] = lr
        if running is not None:
            row["train/running_loss"] = running
        self.tracker.log(row)
        self.tracker.log_samples(samples)
        if row["val/loss"] < self.best_val:
            self.best_val = row["val/loss"]
            save_model_atomic(model, self.tokenizer, self.run_dir / "best")
        self.eval_seconds += time.time() - started
        line = f"step {step:>6}/{cfg.train.max_steps} | train {row['train/loss']:.3f} | val {row['val/loss']:.3f}"
        line += f" | gap {row['gap']:+.3f}"
        if "mem/mia_auc" in row:
            line += f" | extract {row['mem/extraction_rate_train']:.2f} | auc {row['mem/mia_auc']:.2f}"
        tqdm.write(f"{line} | {time.time() - self.start:.0f}s")
        return row


class RunCallback(TrainerCallback):
    """Evaluations, the non-finite-loss guard and stop signals, at step boundaries of the Trainer."""

    def __init__(self, run: Run, stop: StopSignals):
        self.run, self.stop = run, stop

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and self.run.tracker is not None:
            self.run.evaluate(model, 0)

    def on_step_end(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        step, run = state.global_step, self.run
        diverged, stop = dist.any_rank(not run.trainer.pop_finite(), self.stop.received is not None)
        if diverged:  # before anything is saved: the checkpoints on disk are the last good ones
            lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else run.cfg.train.lr
            kept = find_checkpoint(run.run_dir)
            raise UserError(f"train/loss is not finite at step {step} (learning rate {lr:.3g}): training diverged; "
                            f"lower train.lr={run.cfg.train.lr:g} or raise train.warmup_steps; last good checkpoint: "
                            f"{kept or 'none'}")
        if step % run.cfg.train.eval_every == 0 or step >= state.max_steps:
            running = run.trainer.pop_running_loss()  # a collective: every rank takes part
            if run.tracker is not None:
                lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None
                run.evaluate(model, step, lr, running)
        if stop:
            control.should_save = True
            control.should_training_stop = True
            run.stopped_at = step

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and state.is_world_process_zero:
            trainer = self.run.trainer
            marker = {"step": state.global_step, "wandb_id": self.run.tracker.summary.get("wandb_id"),
                      # the training loss summed since the last evaluation, so that a resumed run's
                      # train/running_loss equals an uninterrupted one's
                      "running_loss": {"sum": float(trainer.loss_sum), "micro_steps": trainer.loss_steps}}
            tmp = ckpt / (COMPLETE + ".tmp")
            tmp.write_text(json.dumps(marker))
            os.replace(tmp, ckpt / COMPLETE)


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda: no CUDA device is visible; use train.device=auto or cpu")
    return choice


def native_bf16(device: str) -> bool:
    """Whether the device computes in bf16 natively (emulated bf16 trains slower than fp32)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_precision(precision: str, device: str) -> None:
    if precision == "bf16" and not native_bf16(device):
        raise UserError(f"train.precision=bf16: this {device.upper()} has no native bf16 arithmetic, so bf16 would "
                        "train slower than fp32; use train.precision=fp32")


def training_arguments(cfg, run_dir: Path, device: str) -> TrainingArguments:
    t = cfg.train
    world = dist.world_size()
    per_device, rest = divmod(t.batch_size, t.grad_accum * world)
    if rest or per_device == 0:
        raise UserError(f"train.batch_size={t.batch_size}: must be a multiple of train.grad_accum x processes "
                        f"({t.grad_accum} x {world})")
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.beta1,
        adam_beta2=t.beta2,
        max_grad_norm=t.grad_clip,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio},
        save_strategy="steps",
        save_steps=t.save_every or t.eval_every,
        save_total_limit=t.save_total_limit,
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=cfg.seed,
        use_cpu=device == "cpu",
        train_sampling_strategy="sequential",  # the windows are already drawn at random offsets
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step
        dataloader_pin_memory=device == "cuda",
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def check_resume(cfg, run_dir: Path) -> tuple[Path, Optional[Path]]:
    """(the directory the run writes to, the checkpoint it continues from, or None)."""
    if not cfg.train.resume:
        return run_dir, None
    target = run_dir if cfg.train.resume == "auto" else Path(cfg.train.resume).expanduser()
    if cfg.train.resume != "auto" and not target.is_dir():
        raise UserError(f"train.resume={cfg.train.resume!r}: no such run directory")
    ckpt = find_checkpoint(target)
    if ckpt is None:
        if cfg.train.resume == "auto":
            return run_dir, None
        raise UserError(f"train.resume={cfg.train.resume!r}: no complete checkpoint in {target / 'checkpoints'}; "
                        "start a new run instead")
    saved = target / "config.yaml"
    if saved.exists():
        old = OmegaConf.load(saved)
        for section in ("model", "data"):
            if OmegaConf.to_container(old[section]) != OmegaConf.to_container(cfg[section]):
                raise UserError(f"train.resume: the {section} config differs from the run being resumed "
                                f"({saved}); resume with the same {section} settings")
    return target, ckpt


def close_progress_bar(trainer: Trainer) -> None:
    for callback in trainer.callback_handler.callbacks:
        bar = getattr(callback, "training_bar", None)
        if bar is not None:
            bar.close()
            callback.training_bar = None


def rank0_first(load):
    """`load()` on rank 0 first (it fills the caches), then on the other ranks; rank 0's error stops all."""
    if dist.world_size() == 1:
        return load()
    if dist.is_main():
        try:
            result = load()
        except UserError as e:
            dist.share(str(e))
            raise
        dist.share(None)
        return result
    error = dist.share(None)
    if error:
        raise UserError(error)
    return load()


def out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))


def train(cfg) -> dict:
    """Run one experiment; return its summary. Raises UserError for problems the user can fix,
    TrainingStopped when a stop signal ended it early with a checkpoint saved."""
    device = resolve_device(cfg.train.device)
    check_precision(cfg.train.precision, device)
    dist.setup(device)
    try:
        with StopSignals() as stop:
            return _train(cfg, device, stop)
    finally:
        dist.teardown()


def _train(cfg, device: str, stop: StopSignals) -> dict:
    main = dist.is_main()
    if dist.world_size() > 1:
        from gptfit.cli import discard_unused_run_dir

        shared = dist.share(cfg.run_dir)  # one run directory: rank 0's
        if not main and shared != cfg.run_dir:
            discard_unused_run_dir(cfg.run_dir)
            cfg.run_dir = shared
    run_dir, ckpt = check_resume(cfg, Path(cfg.run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run directory {run_dir} is not writable; choose another with hydra.run.dir=...")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save/load bars; the Trainer's own progress bar stays
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    # Data and model: the tokenizer comes from the pretrained model, or is trained on the corpus.
    path = pretrained_path(cfg)
    tokenizer = load_tokenizer(path, cfg.model.trust_remote_code) if path else None
    corpus = rank0_first(lambda: load_corpus(cfg.data, tokenizer))
    tokenizer = corpus.tokenizer
    if len(corpus.val) < cfg.model.block_size:
        raise UserError(f"data.val_fraction={cfg.data.val_fraction}: the held-out text has {len(corpus.val)} tokens, "
                        f"less than one window of model.block_size={cfg.model.block_size}; raise it")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tokenizer)
    context = model_context(model)
    if context is not None and cfg.model.block_size > context:
        raise UserError(f"model.block_size={cfg.model.block_size}: longer than the model's context of {context}; "
                        f"lower it to at most {context}")

    resume_step, wandb_id, running = None, None, {}
    if ckpt is not None:
        marker = json.loads((ckpt / COMPLETE).read_text())
        resume_step, wandb_id, running = marker["step"], marker.get("wandb_id"), marker.get("running_loss", {})
        log.info("resuming %s from step %d", run_dir, resume_step)
    tracker = None
    if main:
        OmegaConf.save(cfg, run_dir / "config.yaml")
        (run_dir / "tokenizer").mkdir(exist_ok=True)
        tokenizer.save_pretrained(run_dir / "tokenizer")
        info = {
            "corpus_hash": corpus.corpus_hash,
            "tokenizer_hash": corpus.tokenizer_hash,
            "n_params": sum(p.numel() for p in model.parameters()),
            "data": {"train_tokens": len(corpus.train), "val_tokens": len(corpus.val),
                     "pool_tokens": corpus.pool_tokens, "train_docs": corpus.n_train_docs,
                     "val_docs": corpus.n_val_docs, "val_dropped": corpus.val_dropped},
            "device": device,
            "precision": cfg.train.precision,
            "world_size": dist.world_size(),
        }
        if resume_step is not None:
            info["resumed_from_step"] = resume_step
        config = OmegaConf.to_container(cfg, resolve=True)
        run_name = cfg.logger.run_name or f"{cfg.name}-{run_dir.name}"
        tracker = Tracker(run_dir, cfg.logger, run_name, config, info, resume_step, wandb_id)
    trainer = None
    try:
        if tracker is not None:
            overlap = ngram_overlap(corpus.train, corpus.val, 8)
            tracker.update(**{"data/val_overlap_8gram": overlap})
            if tracker.wandb is not None:
                tracker.wandb.summary["data/val_overlap_8gram"] = overlap
        run = Run(cfg, run_dir, corpus, model, tokenizer, tracker)
        dataset = RandomWindows(corpus.train, cfg.model.block_size, cfg.train.max_steps * cfg.train.batch_size, cfg.seed)
        trainer = GptfitTrainer(
            model=model,
            args=training_arguments(cfg, run_dir, device),
            train_dataset=dataset,
            callbacks=[RunCallback(run, stop)],
            precision=cfg.train.precision,
        )
        run.trainer = trainer
        if running:
            trainer.loss_sum = torch.tensor(running.get("sum", 0.0))
            trainer.loss_steps = running.get("micro_steps", 0)
        try:
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        except BaseException as e:
            if out_of_memory(e):
                raise UserError(
                    f"out of memory with train.batch_size={cfg.train.batch_size}, model.block_size="
                    f"{cfg.model.block_size}, eval.batch_size={cfg.eval.batch_size}: lower train.batch_size (raise "
                    "train.grad_accum to keep the batch), model.block_size, the model's size or eval.batch_size"
                ) from None
            raise
        if run.stopped_at is not None:
            name = signal.Signals(stop.received).name
            message = (f"stopped by {name} at step {run.stopped_at}; checkpoint saved in {run_dir / 'checkpoints'}; "
                       f"continue with train.resume={run_dir}")
            if tracker is not None:
                tracker.update(stopped_at_step=run.stopped_at, stop_signal=name)
                tracker.finish("stopped")
            raise TrainingStopped(message, forward=stop.forward)
        if tracker is not None:
            save_model_atomic(trainer.model, tokenizer, run_dir / "final")
            title = f"{cfg.name}: {len(corpus.train)} training tokens"
            loss_curves(tracker.rows, run_dir / "loss.png", title=title)
            memorization_curves(tracker.rows, run_dir / "memorization.png", title=title)
            tracker.update(eval_time_s=round(run.eval_seconds, 2))
            tracker.finish("finished")
    except TrainingStopped:
        raise
    except BaseException as e:
        if trainer is not None:
            close_progress_bar(trainer)  # so that the error line starts a line of its own
        if tracker is not None:
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            tracker.finish("failed", error=f"{type(e).__name__}: {error}")
        raise
    return tracker.summary if tracker is not None else {}
