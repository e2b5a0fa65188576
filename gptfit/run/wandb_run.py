"""The Weights & Biases side of a run's record: starting a W&B run (online, or offline where there is no key or
no network), one history row per evaluation, what the automatic workspace shows, the summary and the artifacts.

W&B is imported only here and only when a run logs to it (about a second, which logger=none never pays).
Every W&B run of gptfit (training, report, mia) starts through `start_wandb`, so all of them follow
`logger.*` (project, entity, mode and the offline fallback).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
import netrc
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from gptfit import keys
from gptfit.config import LoggerConfig

# Keys kept in the history but hidden from the automatic workspace: the axes W&B already offers, interval
# bounds (shown with their figure in the report) and the fine-grained n-gram orders and character lengths.
HIDDEN = (keys.STEP, keys.EPOCH, "*_lo", "*_hi", "gen/*/longest_copy_chars", "gen/*/novel_*gram", "gen/*/distinct_*")
SHOWN = ("gen/*/novel_8gram", "gen/*/distinct_2")  # the orders the README and the report read


def hidden(key: str) -> bool:
    matches = lambda patterns: any(fnmatch.fnmatchcase(key, p) for p in patterns)  # noqa: E731
    return matches(HIDDEN) and not matches(SHOWN)


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb(logger: LoggerConfig, folder: Path, name: str, config: dict, resume_id: str | None = None, **extra):
    """A W&B run under `logger`'s settings (None when logging is off), never blocking long on a missing
    network: an online start that fails goes on offline, to be uploaded later with `wandb sync`. `extra`
    (job_type, group, tags, notes) overrides the logger's own."""
    if logger.backend != "wandb" or logger.mode == "disabled":
        return None
    if os.environ.get("WANDB_MODE") == "":  # set but empty: W&B would refuse it; it means "not set"
        del os.environ["WANDB_MODE"]
    import wandb

    mode = logger.mode
    if mode == "auto":
        mode = "online" if has_wandb_key() else "offline"
    kwargs = dict(
        project=logger.project,
        entity=logger.entity,
        group=logger.group or name,  # a single run is its own group; a run's resumed parts share it
        tags=list(logger.tags),
        notes=logger.notes,
        job_type=logger.job_type,
        name=name,
        dir=str(folder),
        config=config,
    )
    kwargs.update(extra)
    settings = wandb.Settings(init_timeout=float(logger.init_timeout), console="off", silent=True)
    try:
        resumes = dict(id=resume_id, resume="allow") if resume_id and mode == "online" else {}
        return wandb.init(mode=mode, settings=settings, **kwargs, **resumes)
    except Exception as e:  # no network, bad key, service down: the run goes on offline
        if mode != "online":
            raise
        warnings.warn(
            f"W&B online init failed ({type(e).__name__}: {str(e).strip()[:120]}); logging offline, "
            "upload later with `wandb sync`",
            stacklevel=2,
        )
        return wandb.init(mode="offline", settings=settings, **kwargs)


def start_sweep_wandb(loggers: list[LoggerConfig], folder: Path, job_type: str, config: dict):
    """A W&B run for what a command makes of a sweep's runs (report, mia), under the runs' own logger settings
    (`loggers`: project, entity, mode and the offline fallback; the first run's, or the defaults), in a group
    of its own named after the sweep and tagged with it. The command was asked for W&B, so it logs there even
    where the runs did not (logger=none); None under logger.mode=disabled."""
    logger = dataclasses.replace(next(iter(loggers), LoggerConfig()), backend="wandb")
    sweep = logger.sweep or folder.name
    name = f"{job_type}-{sweep}"
    return start_wandb(logger, folder, name, config, job_type=job_type, group=name, tags=[f"sweep:{sweep}"], notes=None)


class WandbLog:
    """A training run's W&B run: one history row per evaluation (its figures, samples and tables staged into
    it, and what the run makes after its last evaluation too), the hidden keys declared as they appear, and
    `best/*` taken from the evaluation with the lowest validation loss."""

    def __init__(self, run):
        self.run = run
        self.pending: dict | None = None
        self.declared: set[str] = set()
        run.define_metric(keys.TOKENS_SEEN)
        run.define_metric("*", step_metric=keys.TOKENS_SEEN)

    def row(self, row: dict) -> None:
        """An evaluation's row; the previous one goes to W&B now, whole."""
        self.flush()
        self.pending = {k: v for k, v in row.items() if v is not None}  # null: not estimable (summary.json)
        for key in self.pending.keys() - self.declared:
            self.declared.add(key)
            if hidden(key):
                self.run.define_metric(key, step_metric=keys.TOKENS_SEEN, hidden=True)

    def stage(self, media: dict) -> None:
        """Media (images, tables, the page) into the current evaluation's row."""
        if self.pending is None:  # nothing evaluated yet: a row of its own
            self.pending = {keys.TOKENS_SEEN: 0}
        self.pending.update(media)

    def flush(self) -> None:
        if self.pending is not None:
            self.run.log(self.pending)
            self.pending = None

    def best(self, rows: list[dict]) -> None:
        """best/<key>: every key's value at the evaluation with the lowest validation loss, and best/step."""
        scored = [r for r in rows if isinstance(r.get(keys.VAL_LOSS), (int, float)) and math.isfinite(r[keys.VAL_LOSS])]
        if scored:
            best = min(scored, key=lambda r: r[keys.VAL_LOSS])
            self.run.summary.update(
                {f"best/{k}": v for k, v in best.items() if v is not None and k != keys.TOKENS_SEEN}
            )

    def artifact(self, name: str, kind: str, path: Path, aliases: list[str] | None = None, **metadata) -> None:
        """A file or folder as a W&B artifact (offline, it waits for `wandb sync` like the run)."""
        import wandb

        artifact = wandb.Artifact(name, type=kind, metadata={k: v for k, v in metadata.items() if v is not None})
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=aliases)

    def log_inputs(self, train: np.ndarray, val: np.ndarray, tokenizer_dir: Path, lineage: dict) -> None:
        """The corpus the run trains and validates on (type dataset, named by its tokens' hash, so runs on one
        corpus share it) and its tokenizer (type tokenizer), each with `lineage` (the corpus and tokenizer
        hashes, and the base model a fine-tuning starts from) in its metadata."""
        digest = hashlib.sha256(train.tobytes() + val.tobytes()).hexdigest()[:16]
        with tempfile.TemporaryDirectory() as tmp:  # W&B copies the files into its staging folder
            np.save(Path(tmp) / "train.npy", train)
            np.save(Path(tmp) / "val.npy", val)
            self.artifact(
                f"corpus-{digest}", "dataset", Path(tmp), train_tokens=len(train), val_tokens=len(val), **lineage
            )
        self.artifact(f"tokenizer-{lineage['tokenizer_hash'][:16]}", "tokenizer", tokenizer_dir, **lineage)

    def log_outputs(self, models: dict[str, Path], table: Path | None, lineage: dict) -> None:
        """logger.log_model: the saved models (type model, one artifact per run, aliased final and best), the
        base a fine-tuning started from (online, as the run's input; offline W&B cannot use an artifact, and
        the lineage stays in the metadata), and the per-sequence table (type table)."""
        name = f"model-{self.run.id}"
        for alias, folder in models.items():
            if folder.is_dir():
                self.artifact(name, "model", folder, aliases=[alias], **lineage)
        base = lineage.get("base")
        if base and Path(base).is_dir() and self.run.settings.mode == "online":
            import wandb

            artifact = wandb.Artifact(f"base-{Path(base).name}", type="model", metadata=lineage)
            artifact.add_dir(base)
            self.run.use_artifact(artifact)
        if table is not None and table.exists():
            self.artifact(f"sequences-{self.run.id}", "table", table, **lineage)

    def finish(self, status: str, summary: dict) -> None:
        self.flush()
        self.run.summary.update(summary)
        if status == "stopped":
            self.run.mark_preempting()  # W&B shows it as preempted, to be resumed
        self.run.finish(exit_code=0 if status == "finished" else 1)
