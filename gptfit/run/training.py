"""One training run, as a recipe: the run folder, the resume point, the corpus, the model, the tracker, the
Trainer; then training, and the final files.

Each step is a function of its own below; the rooms they call: checkpoints.py (resume, atomic saves),
trainer.py (the Trainer and its arguments), callback.py (what happens at step boundaries),
exposure.py (which windows the model saw), evaluation.py (what is measured), tracking.py and
sequence_log.py (where it goes), signals.py, distributed.py, folder.py.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers.utils import logging as hf_logging

from gptfit.config import Config, ModelConfig, TrainConfig, as_dict, general_corpora
from gptfit.data.corpus import Corpus, ngram_overlap, run_corpus
from gptfit.data.duplicates import spans
from gptfit.data.goldfish import goldfish_mask
from gptfit.data.windows import EpochWindows, RandomWindows, Windows
from gptfit.errors import UserError
from gptfit.files import (
    ADAPTER,
    BEST_MODEL,
    CONFIG,
    FINAL_MODEL,
    LOSS_FIGURE,
    MEMORIZATION_FIGURE,
    SEQUENCES,
    SUBSET,
    TOKENIZER,
    write_json_atomic,
    write_text_atomic,
)
from gptfit.measures.base import Setup
from gptfit.model.finetune import apply_finetune, count_parameters, is_lora, plain_model, save_adapter
from gptfit.model.loading import build_model, model_context
from gptfit.page.write import run_page
from gptfit.plots.curves import duplication_curve, forgetting_curve, loss_curves, memorization_curves
from gptfit.plots.finetune import general_names, learn_forget_curves
from gptfit.run import distributed as dist
from gptfit.run import unlearning
from gptfit.run.callback import Run, RunCallback
from gptfit.run.checkpoints import Resume, check_resume, find_checkpoint, read_marker, save_model_atomic
from gptfit.run.early_stopping import score_best
from gptfit.run.evaluation import Evaluator, NoEvaluator
from gptfit.run.exposure import FILE as LEDGER_FILE
from gptfit.run.exposure import CountedWindows, ExposureLedger, write_ledger
from gptfit.run.folder import disk_full, lock_run_dir, make_writable_run_dir
from gptfit.run.privacy import PoissonWindows, Privacy, plan
from gptfit.run.signals import StopSignals, TrainingStopped
from gptfit.run.tracking import NoTracker, Tracker
from gptfit.run.trainer import (
    GptfitTrainer,
    check_precision,
    close_progress_bar,
    out_of_memory,
    resolve_device,
    training_arguments,
)

log = logging.getLogger(__name__)


def train(config: Config) -> dict:
    """Run one experiment from its checked config; return its summary. Raises UserError for problems the user
    can fix, TrainingStopped when a stop signal ended it early with a checkpoint saved. The recipe is the one
    place that holds the whole config: every step below takes the sections it uses."""
    device = resolve_device(config.train.device)
    check_precision(config.train.precision, device)
    dist.setup(device)
    try:
        with StopSignals() as stop:
            return _train(config, device, stop)
    finally:
        dist.teardown()


def _train(config: Config, device: str, stop: StopSignals) -> dict:
    train, model_section = config.train, config.model
    run_dir = Path(dist.follow_main_run_dir(config.run_dir))  # one run directory for all ranks: rank 0's
    run_dir, ckpt = check_resume(run_dir, train, model_section, config.data)
    make_writable_run_dir(run_dir)
    if dist.is_main():
        lock_run_dir(run_dir)  # one writer per run folder (the command took it already; train() alone did not)
    quiet_libraries(train.threads)
    corpus = dist.rank0_first(lambda: run_corpus(model_section, config.data, config.eval))
    model = apply_finetune(prepare_model(model_section, config.seed, corpus.tokenizer), train)
    resume = read_marker(ckpt) if ckpt is not None else None
    if resume is not None:
        log.info("resuming %s from step %d", run_dir, resume.step)
    # Only rank 0 evaluates and writes: the other ranks get a tracker and an evaluator that do nothing.
    main = dist.is_main()
    tracker = start_tracker(config, run_dir, corpus, model, device, resume) if main else NoTracker()
    trainer = None
    try:
        record_overlap(tracker, corpus)
        privacy = plan_privacy(train, model_section.block_size, len(corpus.train)) if train.dp.on else None
        per_step = privacy.windows if privacy is not None else train.batch_size  # sample indices a step
        ledger = ExposureLedger(len(corpus.train), model_section.block_size, per_step)
        if resume is not None:
            load_ledger(ledger, resume)
        evaluator = make_evaluator(config, corpus, privacy) if main else NoEvaluator()
        tracker.update(**evaluator.at_start(model))
        if privacy is not None:
            tracker.update(privacy=privacy.record())
        if tracker.rows:  # resumed: the measures that count from step 0 take it from the first row
            evaluator.resume(tracker.rows[0])
        run = Run(train, run_dir, corpus, model, corpus.tokenizer, evaluator, tracker, ledger, model_section.block_size)
        trainer = make_trainer(config, run, model, device, stop, resume, privacy)
        fit(train, model_section.block_size, config.eval.batch_size, trainer, ckpt)
        if run.stopped_at is not None:
            raise stopped(run, stop)
        ledger.settle(train.max_steps)
        exposure = ledger.totals()  # a collective: every rank takes part
        if tracker.writes:
            write_ledger(run_dir / LEDGER_FILE, *exposure, model_section.block_size)
            write_final_files(config, run, trainer)
    except TrainingStopped:
        raise
    except BaseException as e:
        if trainer is not None:
            close_progress_bar(trainer)  # so that the error line starts a line of its own
        full = no_space_error(run_dir) if disk_full(e) else None
        mark_failed(tracker, full or e)
        if full is not None:
            raise full from None
        raise
    return tracker.summary


def no_space_error(run_dir: Path) -> UserError:
    kept = find_checkpoint(run_dir)
    return UserError(
        f"the disk is full: a write into {run_dir} failed; free some space (or lower "
        f"train.save_total_limit) and run the same command again: it resumes from "
        f"{kept if kept is not None else 'the start (no complete checkpoint yet)'}"
    )


def mark_failed(tracker: Tracker | NoTracker, e: BaseException) -> None:
    error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    try:
        tracker.finish("failed", error=f"{type(e).__name__}: {error}")
    except OSError:
        pass  # the disk that failed the run may refuse the summary too; the error line still says what happened


def quiet_libraries(threads: int) -> None:
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save/load bars; the Trainer's own progress bar stays
    if threads:
        torch.set_num_threads(threads)


def prepare_model(model: ModelConfig, seed: int, tokenizer):
    torch.manual_seed(seed)
    built = build_model(model, tokenizer)
    context = model_context(built)
    if context is not None and model.block_size > context:
        raise UserError(
            f"model.block_size={model.block_size}: longer than the model's context of {context}; "
            f"lower it to at most {context}"
        )
    return built


def start_tracker(config: Config, run_dir: Path, corpus: Corpus, model, device: str, resume: Resume | None) -> Tracker:
    """The run's config and tokenizer on disk, and the tracker with the run's metadata."""
    as_saved = as_dict(config)
    write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(as_saved))
    if corpus.subset is not None:  # which candidates this shadow model trained on
        write_json_atomic(run_dir / SUBSET, corpus.subset.record())
    (run_dir / TOKENIZER).mkdir(exist_ok=True)
    corpus.tokenizer.save_pretrained(run_dir / TOKENIZER)
    info = {
        "corpus_hash": corpus.corpus_hash,
        "tokenizer_hash": corpus.tokenizer_hash,
        "n_params": sum(p.numel() for p in model.parameters()),
        **dict(zip(("trainable_params", "total_params"), count_parameters(model))),
        "data": {
            "train_tokens": len(corpus.train),
            "val_tokens": len(corpus.val),
            "pool_tokens": corpus.pool_tokens,
            "train_docs": corpus.n_train_docs,
            "val_docs": corpus.n_val_docs,
            "val_dropped": corpus.val_dropped,
            "planted_tokens": planted_tokens(corpus),
            "dedup_removed_tokens": corpus.dedup_removed,
        },
        "device": device,
        "precision": config.train.precision,
        "world_size": dist.world_size(),
    }
    if resume is not None:
        info["resumed_from_step"] = resume.step
    run_name = config.logger.run_name or f"{config.name}-{run_dir.name}"
    tracker = Tracker(
        run_dir,
        config.logger,
        run_name,
        as_saved,
        info,
        resume.step if resume else None,
        resume.wandb_id if resume else None,
    )
    tracker.log_inputs(corpus.train, corpus.val, run_dir / TOKENIZER, lineage(config, corpus))
    return tracker


def lineage(config: Config, corpus: Corpus) -> dict:
    """What a run's artifacts say they came from: the corpus and tokenizer hashes, and the base model."""
    return {"corpus_hash": corpus.corpus_hash, "tokenizer_hash": corpus.tokenizer_hash, "base": config.model.init_from}


def make_evaluator(config: Config, corpus: Corpus, privacy: Privacy | None = None) -> Evaluator:
    """The run's measures, built from its config (gptfit/measures/)."""
    data = config.data
    setup = Setup(
        config.eval,
        config.decoding,
        corpus,
        corpus.tokenizer,
        block_size=config.model.block_size,
        eval_every=config.train.eval_every,
        seed=config.seed,
        split_seed=data.split_seed,
        grammar=data.grammar if data.source == "grammar" else None,
        general=general_corpora(config.eval, config.model),
        cache_dir=data.cache_dir,
        train=config.train,
        privacy=privacy,
        base=config.model.init_from if config.model.kind == "base" else None,
        unlearn=config.unlearn if config.unlearn.on else None,
    )
    return Evaluator(setup)


def planted_tokens(corpus: Corpus) -> int:
    """Tokens that data.duplicates and data.forget put into the training set, on top of data.train_tokens."""
    groups = corpus.planted + ([corpus.forgotten] if corpus.forgotten is not None else [])
    return sum(len(g.tokens) * (g.tokens.shape[1] + 1) * g.copies for g in groups)


def record_overlap(tracker: Tracker | NoTracker, corpus: Corpus) -> None:
    """The leak check: the share of held-out 8-grams that also occur in the training text."""
    if not tracker.writes:
        return
    overlap = ngram_overlap(corpus.train, corpus.val, 8)
    tracker.update(**{"data/val_overlap_8gram": overlap})


def load_ledger(ledger: ExposureLedger, resume: Resume) -> None:
    path = resume.checkpoint / LEDGER_FILE
    if path.exists():
        ledger.load(path)
    else:  # a checkpoint written before gptfit kept a ledger: the counts start at the resume
        log.warning("%s has no exposure ledger: exposures count from step %d on", resume.checkpoint, resume.step)


def plan_privacy(train: TrainConfig, block_size: int, train_tokens: int) -> Privacy:
    """train.dp over the training set's non-overlapping windows, Poisson-sampled at train.batch_size."""
    return plan(train.dp, train_tokens // block_size, train.batch_size, train.max_steps, block_size=block_size)


def training_windows(train: TrainConfig, block_size: int, seed: int, train_tokens) -> Windows:
    """train.sampling: windows at random offsets, or every non-overlapping window once per epoch; under DP-SGD
    the non-overlapping windows, Poisson-sampled."""
    if train.dp.on:
        return PoissonWindows(train_tokens, block_size, train.max_steps, seed)
    kind = EpochWindows if train.sampling == "epochs" else RandomWindows
    return kind(train_tokens, block_size, train.max_steps * train.batch_size, seed)


def make_windows(config: Config, corpus: Corpus) -> Windows:
    windows = training_windows(config.train, config.model.block_size, config.seed, corpus.train)
    if corpus.forgotten is not None:  # gone from the training set after data.forget.until_step
        length = config.eval.prefix_tokens + config.eval.suffix_tokens
        windows.avoid(
            spans(len(corpus.train), [corpus.forgotten], length),
            config.data.forget.until_step,
            config.train.batch_size,
        )
    goldfish = config.train.goldfish
    if goldfish.k is not None:  # over the whole stream, once: every copy of a passage drops the same tokens
        separator = corpus.eot_id if goldfish.context == "document" else None
        windows.drop(goldfish_mask(corpus.train, goldfish.k, goldfish.h, separator))
    return windows


def make_trainer(
    config: Config, run: Run, model, device: str, stop: StopSignals, resume: Resume | None, privacy: Privacy | None
) -> GptfitTrainer:
    args = training_arguments(config.train, config.seed, run.run_dir, device)
    trainer = build_trainer(config, run.corpus, model, run.ledger, args, [RunCallback(run, stop)], privacy)
    run.trainer = trainer
    if resume is not None and resume.running_loss:
        trainer.loss_sum = torch.tensor(resume.running_loss.get("sum", 0.0))
        trainer.loss_steps = resume.running_loss.get("micro_steps", 0)
    return trainer


def build_trainer(
    config: Config, corpus: Corpus, model, ledger: ExposureLedger, args, callbacks: list, privacy: Privacy | None = None
) -> GptfitTrainer:
    """The Trainer of a run, over its training windows (bench/e2e.py builds the same one, without evaluation);
    an unlearning run's windows come with forget sequences, and its method gives the loss."""
    dataset = CountedWindows(make_windows(config, corpus), ledger)
    method = unlearning.objective(config, corpus, model) if config.unlearn.on else None
    return GptfitTrainer(
        model=model,
        args=args,
        train_dataset=unlearning.with_forget(dataset, corpus) if method is not None else dataset,
        callbacks=callbacks,
        precision=config.train.precision,
        privacy=privacy,
        objective=method,
    )


def fit(train: TrainConfig, block_size: int, eval_batch_size: int, trainer: GptfitTrainer, ckpt: Path | None) -> None:
    """Train to `train.max_steps` (or a stop signal); running out of memory is one line that says what to lower."""
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except BaseException as e:
        if out_of_memory(e):
            raise UserError(
                f"out of memory with train.batch_size={train.batch_size}, model.block_size="
                f"{block_size}, eval.batch_size={eval_batch_size}: lower train.batch_size (raise "
                "train.grad_accum to keep the batch), model.block_size, the model's size or eval.batch_size"
            ) from None
        raise


def stopped(run: Run, stop: StopSignals) -> TrainingStopped:
    """The run ended early by a signal: its summary says so, and the error says how to continue."""
    name = signal.Signals(stop.received).name
    message = (
        f"stopped by {name} at step {run.stopped_at}; checkpoint saved in {run.run_dir / 'checkpoints'}; "
        f"continue with train.resume={run.run_dir}"
    )
    run.tracker.update(stopped_at_step=run.stopped_at, stop_signal=name)
    run.tracker.finish("stopped")
    return TrainingStopped(message, forward=stop.forward)


def write_final_files(config: Config, run: Run, trainer: GptfitTrainer) -> None:
    save_model_atomic(plain_model(trainer.model), run.tokenizer, run.run_dir / FINAL_MODEL)
    if is_lora(trainer.model):  # the adapter alone too, for peft users
        save_adapter(trainer.model, run.run_dir / ADAPTER)
    title = f"{config.name}: {len(run.corpus.train)} training tokens"
    loss_curves(run.tracker.rows, run.run_dir / LOSS_FIGURE, title=title)
    memorization_curves(run.tracker.rows, run.run_dir / MEMORIZATION_FIGURE, title=title)
    if config.data.duplicates.on:
        duplication_curve(run.tracker.rows, run.run_dir / "duplication.png")
    if config.data.forget.on:
        forgetting_curve(run.tracker.rows, config.data.forget.until_step, run.run_dir / "forgetting.png")
    if general_names(run.tracker.rows):
        learn_forget_curves(run.tracker.rows, run.run_dir / "learn_forget.png", title=title)
    figures = (LOSS_FIGURE, MEMORIZATION_FIGURE, "duplication.png", "forgetting.png", "learn_forget.png")
    run.tracker.log_figures({Path(f).stem: run.run_dir / f for f in figures if (run.run_dir / f).exists()})
    final_measures(config, run, trainer)
    if config.logger.log_model:
        models = {"final": run.run_dir / FINAL_MODEL, "best": run.run_dir / BEST_MODEL}
        run.tracker.log_outputs(models, run.run_dir / SEQUENCES, lineage(config, run.corpus))
    run.tracker.finish("finished")


def final_measures(config: Config, run: Run, trainer: GptfitTrainer) -> None:
    """What is measured once at the end, counted as evaluation: best/'s rescoring, the page, and an
    unlearning run's relearning attack."""
    started = time.time()
    score_best(run, next(trainer.model.parameters()).device)
    run.eval_seconds += time.time() - started
    if config.eval.explore:  # the page counts as evaluation
        started = time.time()
        page = run_page(
            run.run_dir,
            trainer.model,
            run.tokenizer,
            run.corpus,
            config.eval,
            config.model.block_size,
            config.seed,
            config.name,
        )
        run.tracker.log_html("explore", page)
        run.eval_seconds += time.time() - started
        run.tracker.update(explore_time_s=round(time.time() - started, 2))
    if config.unlearn.on and config.unlearn.relearn_steps:
        started = time.time()
        run.tracker.update(relearn=unlearning.relearn(config, run.corpus, trainer.model, run.run_dir))
        run.tracker.log_figures({"relearn": run.run_dir / unlearning.RELEARN_FIGURE})
        run.eval_seconds += time.time() - started
    run.tracker.update(eval_time_s=round(run.eval_seconds, 2))
