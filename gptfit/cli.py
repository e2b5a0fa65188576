"""Running a Hydra entry point so that every mistake a user can make ends in one line and a non-zero exit.

Hydra reports composition errors (unknown key, wrong type, missing config option) on several lines;
`hydra_main` condenses them to one. Errors raised by gptfit itself (`ConfigError`, `UserError`) are
printed as `error: ...` lines and exit with status 2.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra._internal import utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gptfit.config import ConfigError, validate
from gptfit.errors import UserError
from gptfit.files import saved_model_dir
from gptfit.run.folder import lock_run_dir

# The config folder, by its absolute path: a module path ("../conf") resolves only when run as __main__.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
EXIT_USER_ERROR = 2
# A stop signal (SIGTERM, SIGUSR2) was honoured: a checkpoint is saved, the run can be resumed
# (EX_TEMPFAIL of sysexits.h: "try again later").
EXIT_STOPPED = 75
_NOISE = (
    "Set the environment variable HYDRA_FULL_ERROR",
    "object_type=",
    "reference_type=",
    "Config search path",
    "provider=",
)


def condense(text: str) -> str:
    """Hydra's multi-line message as one line: 'Available options in x:' lists become comma lists."""
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NOISE):
            continue
        if parts and parts[-1].endswith(":"):
            parts[-1] += " " + line
        elif parts and raw.startswith(("\t", "    ")) and ":" in parts[-1] and not line.startswith("full_key"):
            parts[-1] += ", " + line
        else:
            parts.append(line)
    return "; ".join(parts)


def fail(lines: list[str]) -> None:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def on_saved_run(cfg, schema: type, purpose: str, body: Callable) -> None:
    """The frame of a command that reads a finished run (sample, attend, explore): `run=` is required (for
    `purpose`), the config is checked against `schema`, the saved model (`saved=final|best`) is found, and
    then `body(options, model_dir)` runs. Every mistake is one `error:` line and exit status 2."""
    try:
        if OmegaConf.is_missing(cfg, "run"):
            raise UserError(f"run=<run dir> is required: {purpose}")
        options = validate(cfg, schema)
        body(options, saved_model_dir(options.run, options.saved))
    except ConfigError as e:
        fail(e.problems)
    except UserError as e:
        fail([str(e)])


def cannot_create(e: OSError) -> str:
    return (
        f"cannot create the run folder {e.filename} ({e.strerror}); set hydra.run.dir (hydra.sweep.dir with -m) "
        "to a folder you can write to"
    )


def _in_hydra_output_setup(e: BaseException) -> bool:
    """Whether an OS error came from Hydra setting up the job's output folder, before any gptfit code ran."""
    files = [f.filename for f in traceback.extract_tb(e.__traceback__)]
    in_hydra = any(f"{os.sep}hydra{os.sep}" in f for f in files)
    in_gptfit = any(f"{os.sep}gptfit{os.sep}" in f and not f.endswith(f"{os.sep}cli.py") for f in files)
    return in_hydra and not in_gptfit


def _install_hydra_reporter() -> None:
    original = hydra_utils.run_and_report
    if getattr(original, "_gptfit", False):
        return

    def run_and_report(func: Callable):
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return original(func)
        try:
            return func()
        except (HydraException, OmegaConfBaseException) as e:
            text = str(e)
            if e.__cause__ is not None and str(e.__cause__) not in text:
                text += "\n" + str(e.__cause__)
            fail([condense(text) + " (see --help, or --cfg job for the composed config)"])
        except OSError as e:
            if not _in_hydra_output_setup(e):
                raise
            fail([cannot_create(e)])

    run_and_report._gptfit = True
    hydra_utils.run_and_report = run_and_report


def describe_run(cfg) -> None:
    """What Hydra knows of a training run, into `logger.*` for W&B: default tags (the experiment, the data,
    model and mitigation chosen, the fine-tuning method), the experiment file's header comment as notes, and
    in a multirun the sweep's name, each job named by its overrides and grouped by condition (the swept
    values other than seeds: a W&B group is drawn as the mean of its runs, which should average seeds only)."""
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    logger, choices = cfg.logger, hc.runtime.choices
    picked = [f"{group}:{choices[group]}" for group in TAGGED_GROUPS if choices.get(group)]
    if cfg.model.kind == "base" or cfg.model.init_from:
        picked.append(f"finetune:{cfg.train.finetune}")
    if logger.notes is None and choices.get("experiment"):
        logger.notes = experiment_notes(Path(CONF_DIR) / "experiment" / f"{choices['experiment']}.yaml")
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir).name
        logger.sweep = sweep
        picked.append(f"sweep:{sweep}")
        if logger.group is None:
            logger.group = condition_group(f"{cfg.name}-{sweep}", list(hc.overrides.task))
        if logger.run_name is None:
            logger.run_name = hc.job.override_dirname or f"job{hc.job.num}"
    logger.tags = [*picked, *(t for t in logger.tags if t not in picked)]


TAGGED_GROUPS = ("experiment", "data", "model", "mitigation")
MAX_GROUP = 128  # W&B's longest group name


def condition_group(prefix: str, overrides: list[str]) -> str:
    """`<prefix>/<the job's overrides other than seeds>`: the jobs that differ only in seeds share it. A name
    longer than W&B allows keeps its start and ends in a hash of the whole."""
    condition = [o for o in overrides if not _is_seed_or_choice(o)]
    group = prefix + ("/" + ",".join(condition) if condition else "")
    if len(group) <= MAX_GROUP:
        return group
    return group[: MAX_GROUP - 9] + "~" + hashlib.sha1(group.encode()).hexdigest()[:8]


def _is_seed_or_choice(override: str) -> bool:
    key = override.lstrip("+~").partition("=")[0]
    return key.split(".")[-1].endswith("seed") or key.startswith(("experiment", "hydra"))


def experiment_notes(path: Path) -> str | None:
    """An experiment file's header comment, as one paragraph (its `# @package` line left out)."""
    if not path.exists():
        return None
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return " ".join(lines) or None


class RunFolderLock(Callback):
    """Takes the run folder's lock before Hydra writes its record and log into it (conf/config.yaml
    names it under hydra.callbacks): a second process started into a busy folder stops with one line,
    exit status 2, and leaves every file of the running run as it was. Under torchrun only rank 0 locks;
    the other ranks follow its folder."""

    def on_run_start(self, config, **kwargs) -> None:
        if os.environ.get("RANK", "0") != "0":
            return
        try:
            lock_run_dir(Path(config.hydra.run.dir))
        except UserError as e:
            fail([str(e)])
        except OSError as e:  # said here: Hydra would turn it into a warning of its own, then fail later
            fail([cannot_create(e)])


class SweepSummary(Callback):
    """At the end of a multirun: where its folder is, and how to read it."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir).resolve()
        print(f"sweep folder: {sweep}\nreport: python -m gptfit.report {sweep}")


def hydra_main(task: Callable) -> Callable:
    """Wrap a `@hydra.main` function so that config mistakes are reported in one line."""

    def entry() -> None:
        _install_hydra_reporter()
        task()

    return entry
