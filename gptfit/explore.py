"""`python -m gptfit.explore run=<run dir>`: one self-contained page to explore a run, `<run>/explore.html`.

A Hydra app over conf/explore.yaml (schema: gptfit.config.ExploreConfig): `--help` lists every key,
`--cfg job` prints the composed config. Every run writes its page at its end as well (eval.explore), and
`gptfit.report` one for a sweep. A mistake is one `error:` line and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gptfit.cli import CONF_DIR, hydra_main, on_saved_run
from gptfit.config import ExploreConfig, register

register()


def write_page(options: ExploreConfig, directory) -> None:
    from gptfit.show.explore import explore_saved_run  # torch and transformers, once the config is sound

    print(f"page: {explore_saved_run(options, directory)}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="explore")
def main(cfg: DictConfig) -> None:
    on_saved_run(cfg, ExploreConfig, "the run whose page to write", write_page)


if __name__ == "__main__":
    hydra_main(main)()
