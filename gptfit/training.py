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
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from gptfit.data.corpus import Corpus, load_corpus, ngram_overlap
from gptfit.data.windows import RandomWindows
from gptfit.errors import UserError
from gptfit.evaluation import Evaluator
from gptfit.models import build_model, load_tokenizer, model_context, pretrained_path
from gptfit.plots import loss_curves, memorization_curves
from gptfit.tracking import Tracker

log = logging.getLogger(__name__)
COMPLETE = "gptfit_complete.json"  # written into a checkpoint after everything else: only then it counts


def find_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint of a run; half-written or corrupt ones are skipped with a warning."""
    found = []
    for ckpt in (run_dir / "checkpoints").glob("checkpoint-*"):
        try:
            marker = json.loads((ckpt / COMPLETE).read_text())
            json.loads((ckpt / "trainer_state.json").read_text())
            step = int(marker["step"])
        except (OSError, ValueError, KeyError):
            warnings.warn(f"skipping incomplete or corrupt checkpoint {ckpt}")
            continue
        found.append((step, ckpt))
    return max(found)[1] if found else None


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
    """The Trainer, plus a running sum of the training loss between evaluations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_sum = torch.zeros(())
        self.loss_steps = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Already divided by the accumulation steps, so micro-steps add up to the step's mean loss.
        self.loss_sum = self.loss_sum.to(loss.device) + loss
        self.loss_steps += 1
        return loss

    def pop_running_loss(self) -> Optional[float]:
        if self.loss_steps == 0:
            return None
        value = float(self.loss_sum) * self.args.gradient_accumulation_steps / self.loss_steps
        self.loss_sum, self.loss_steps = torch.zeros(()), 0
        return value


class Run:
    """Everything one run measures and writes; the Trainer drives it through `RunCallback`."""

    def __init__(self, cfg, run_dir: Path, corpus: Corpus, model, tokenizer, tracker: Tracker):
        self.cfg, self.run_dir, self.corpus = cfg, run_dir, corpus
        self.model, self.tokenizer, self.tracker = model, tokenizer, tracker
        self.evaluator = Evaluator(cfg, corpus, tokenizer)
        self.tokens_per_step = cfg.train.batch_size * cfg.model.block_size
        best = tracker.best("val/loss")
        self.best_val = best["value"] if best else float("inf")
        self.trainer: Optional[GptfitTrainer] = None
        self.start = time.time()
        self.eval_seconds = 0.0

    def evaluate(self, model, step: int, lr: Optional[float] = None) -> dict:
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
        running = self.trainer.pop_running_loss() if self.trainer is not None else None
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
    def __init__(self, run: Run):
        self.run = run

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.run.evaluate(model, 0)

    def on_step_end(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        step = state.global_step
        if step % self.run.cfg.train.eval_every == 0 or step >= state.max_steps:
            lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None
            self.run.evaluate(model, step, lr)

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and state.is_world_process_zero:
            marker = {"step": state.global_step, "wandb_id": self.run.tracker.summary.get("wandb_id")}
            tmp = ckpt / (COMPLETE + ".tmp")
            tmp.write_text(json.dumps(marker))
            os.replace(tmp, ckpt / COMPLETE)


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda: no CUDA device is visible; use train.device=auto or cpu")
    return choice


def training_arguments(cfg, run_dir: Path, device: str) -> TrainingArguments:
    t = cfg.train
    world = int(os.environ.get("WORLD_SIZE", "1"))
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


def train(cfg) -> dict:
    """Run one experiment; return its summary. Raises UserError for problems the user can fix."""
    run_dir, ckpt = check_resume(cfg, Path(cfg.run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run directory {run_dir} is not writable; choose another with hydra.run.dir=...")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save/load bars; the Trainer's own progress bar stays
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)

    # Data and model: the tokenizer comes from the pretrained model, or is trained on the corpus.
    path = pretrained_path(cfg)
    tokenizer = load_tokenizer(path, cfg.model.trust_remote_code) if path else None
    corpus = load_corpus(cfg.data, tokenizer)
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

    OmegaConf.save(cfg, run_dir / "config.yaml")
    (run_dir / "tokenizer").mkdir(exist_ok=True)
    tokenizer.save_pretrained(run_dir / "tokenizer")
    resume_step, wandb_id = None, None
    if ckpt is not None:
        marker = json.loads((ckpt / COMPLETE).read_text())
        resume_step, wandb_id = marker["step"], marker.get("wandb_id")
        log.info("resuming %s from step %d", run_dir, resume_step)
    info = {
        "corpus_hash": corpus.corpus_hash,
        "tokenizer_hash": corpus.tokenizer_hash,
        "n_params": sum(p.numel() for p in model.parameters()),
        "data": {"train_tokens": len(corpus.train), "val_tokens": len(corpus.val), "pool_tokens": corpus.pool_tokens,
                 "train_docs": corpus.n_train_docs, "val_docs": corpus.n_val_docs},
        "device": device,
    }
    if resume_step is not None:
        info["resumed_from_step"] = resume_step
    config = OmegaConf.to_container(cfg, resolve=True)
    run_name = cfg.logger.run_name or f"{cfg.name}-{run_dir.name}"
    tracker = Tracker(run_dir, cfg.logger, run_name, config, info, resume_step, wandb_id)
    try:
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
            callbacks=[RunCallback(run)],
        )
        run.trainer = trainer
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        save_model_atomic(trainer.model, tokenizer, run_dir / "final")
        title = f"{cfg.name}: {len(corpus.train)} training tokens"
        loss_curves(tracker.rows, run_dir / "loss.png", title=title)
        memorization_curves(tracker.rows, run_dir / "memorization.png", title=title)
        tracker.update(eval_time_s=round(run.eval_seconds, 2))
        tracker.finish("finished")
    except BaseException as e:
        error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        tracker.finish("failed", error=f"{type(e).__name__}: {error}")
        raise
    return tracker.summary
