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
    # A sweep's runs share one group, named after the sweep, unless this is set.
    group: Optional[str] = None
    # Default: the experiment name and the run directory, or a sweep job's overrides.
    run_name: Optional[str] = None
    tags: List[str] = field(default_factory=list)
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
