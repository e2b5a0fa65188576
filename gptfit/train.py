"""`python -m gptfit.train +experiment=tiny_corpus`: train (or fine-tune) one GPT and log the run.

The config is validated before torch and transformers are imported, so a typo costs a second.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from gptfit.cli import discard_unused_run_dir, fail, hydra_main
from gptfit.config import ConfigError, register, validate

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)
    except ConfigError as e:
        discard_unused_run_dir(cfg.get("run_dir"))
        fail(e.problems)

    from gptfit.errors import UserError
    from gptfit.training import train

    try:
        summary = train(cfg)
    except UserError as e:
        discard_unused_run_dir(cfg.run_dir)
        fail([str(e)])
    except KeyboardInterrupt:
        print("interrupted: the run is marked failed in its summary.json", file=sys.stderr)
        sys.exit(130)
    # The value a Hydra sweeper (e.g. Optuna) minimizes.
    return summary.get("final", {}).get("val/loss")


if __name__ == "__main__":
    hydra_main(main)()
