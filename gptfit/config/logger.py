"""`logger.*`: where a run is tracked besides its folder (Weights & Biases, or nothing)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from gptfit.config.checks import Checks

LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class LoggerConfig:
    # wandb or none.
    backend: str = "wandb"
    project: str = "gptfit"
    entity: Optional[str] = None
    # The W&B group, which W&B draws as one line (the mean, with a band). Default: a single run is its own
    # group; a multirun's runs are grouped by condition (the swept values other than seeds), so that a group
    # averages seeds only: `<name>-<sweep folder>/<condition>`.
    group: Optional[str] = None
    # A multirun's folder name, set for each of its runs (also a tag `sweep:<name>`).
    sweep: Optional[str] = None
    # Default: the experiment name and the run directory, or a sweep job's overrides.
    run_name: Optional[str] = None
    # Added to the default tags (the experiment and the data, model and mitigation chosen, the fine-tuning method).
    tags: List[str] = field(default_factory=list)
    # The run's notes in W&B. Default: the experiment file's header comment.
    notes: Optional[str] = None
    # Also log final/, best/ and sequences.parquet as artifacts (type model and table); the corpus and the
    # tokenizer are always logged. Off by default, as in transformers' own W&B callback: a model is large.
    log_model: bool = False
    job_type: str = "train"
    # auto: online when an API key is set, offline otherwise. online, offline, disabled.
    mode: str = "auto"
    # Seconds to wait for the W&B service before falling back to offline.
    init_timeout: float = 10.0

    def problems(self) -> list[str]:
        c = Checks("logger", self)
        c.one_of("backend", LOGGER_BACKENDS)
        c.one_of("mode", WANDB_MODES)
        env_mode = os.environ.get("WANDB_MODE")  # W&B reads it too, and fails deep inside on a bad value
        if self.backend == "wandb" and env_mode and env_mode not in ("online", "offline", "disabled", "dryrun", "run"):
            c.line(
                f"WANDB_MODE={env_mode!r} (environment): W&B accepts online, offline or disabled; "
                "set one of those or unset it and use logger.mode"
            )
        c.positive("init_timeout")
        return c.problems
