"""`python -m gptfit.train +experiment=tiny_corpus`: train (or fine-tune) one GPT and log the run.

The config is validated before torch and transformers are imported, so a typo costs a second.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gptfit import keys
from gptfit.cli import CONF_DIR, EXIT_STOPPED, describe_run, fail, hydra_main
from gptfit.config import Config, ConfigError, register, validate
from gptfit.errors import UserError
from gptfit.run.folder import discard_unused_run_dir
from gptfit.run.signals import TrainingStopped

register()


def cached_run_config(config: Config, given: list[str], key: str) -> Config:
    """The checked config of a run that is trained into the cache (model.base's base, unlearn.source's
    source) from its overrides `given` (the value of `key`), with this run's cache folder. Composed here, in
    the command, which holds Hydra's config search path."""
    from hydra import compose

    cache = str(Path(config.data.cache_dir).expanduser()).replace("\\", "\\\\").replace("'", "\\'")
    overrides = [*given, f"data.cache_dir='{cache}'", "logger=none", "run_dir=unset"]
    try:
        return validate(compose("config", overrides=overrides))
    except ConfigError as e:
        raise UserError(f"{key}={list(given)}: {'; '.join(e.problems)}") from None


def base_config(config: Config) -> Config:
    """The checked config of the run that makes model=base's base (`model.base`: its overrides)."""
    return cached_run_config(config, list(config.model.base), "model.base")


def start_from_base(config: Config) -> Config:
    """model=base: the run starts from the base model (trained into the cache on first use), with its tokenizer."""
    from gptfit.run.base import ensure_base

    path = ensure_base(base_config(config))
    return replace(config, model=replace(config.model, init_from=str(path)))


def start_unlearning(config: Config) -> Config:
    """unlearn.method: the run starts from the source run's model (unlearn.run, or unlearn.source's run
    trained into the cache on first use), measured against the source retrained without the forget set."""
    from gptfit.run.unlearning import unlearning_config

    u = config.unlearn
    composed = cached_run_config(config, list(u.source), "unlearn.source") if u.run is None else None
    return unlearning_config(config, composed)


def with_checkpoint(error: str, run_dir: Path) -> str:
    """A failed run's error line, with where its last good checkpoint is (when it has one the line does not
    already name)."""
    from gptfit.run.checkpoints import find_checkpoint

    kept = find_checkpoint(run_dir) if run_dir.is_dir() else None
    if kept is None or "checkpoint" in error:
        return error
    return f"{error} (last good checkpoint: {kept}; continue with train.resume={run_dir})"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    describe_run(cfg)  # before the check: nothing changes the config after it
    try:
        config = validate(cfg)
    except ConfigError as e:
        discard_unused_run_dir(cfg.get("run_dir"))
        fail(e.problems)

    from gptfit.run.training import train  # torch and transformers load only once the config is valid
    from gptfit.show.run_summary import closing_lines

    try:
        if config.model.kind == "base":
            config = start_from_base(config)
        if config.unlearn.on:
            config = start_unlearning(config)
        summary = train(config)
    except UserError as e:
        discard_unused_run_dir(config.run_dir)
        fail([with_checkpoint(str(e), Path(config.run_dir))])
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        e.forward()  # under submitit: its handler requeues the job
        sys.exit(EXIT_STOPPED)
    except KeyboardInterrupt:
        print("interrupted: the run is marked failed in its summary.json", file=sys.stderr)
        sys.exit(130)
    if summary:  # rank 0's; the other ranks of a torchrun have none
        print("\n".join(closing_lines(summary)))
    # The value a Hydra sweeper (e.g. Optuna) minimizes.
    return summary.get("final", {}).get(keys.VAL_LOSS)


if __name__ == "__main__":
    hydra_main(main)()
