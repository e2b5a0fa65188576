"""`python -m gptfit.explore run=<run dir>`: one self-contained page to explore a run, `<run>/explore.html`.

A Hydra app over conf/explore.yaml (schema: gptfit.config.ExploreConfig): `--help` lists every key,
`--cfg job` prints the composed config. Every run writes its page at its end as well (eval.explore), and
`gptfit.report` one for a sweep. A mistake is one `error:` line and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from gptfit.cli import CONF_DIR, fail, hydra_main
from gptfit.config import ConfigError, ExploreConfig, register, validate
from gptfit.errors import UserError
from gptfit.run.folder import saved_model_dir

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="explore")
def main(cfg: DictConfig) -> None:
    try:
        if OmegaConf.is_missing(cfg, "run"):
            raise UserError("run=<run dir> is required: the run whose page to write")
        options: ExploreConfig = validate(cfg, ExploreConfig)
        directory = saved_model_dir(options.run, options.saved)
        from gptfit.show.explore import explore_saved_run  # torch and transformers, once the config is sound

        print(f"page: {explore_saved_run(options, directory)}")
    except ConfigError as e:
        fail(e.problems)
    except UserError as e:
        fail([str(e)])


if __name__ == "__main__":
    hydra_main(main)()
