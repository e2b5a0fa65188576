"""`python -m gptfit.sample run=<run dir> decoding=all prompt="..." trace=true`: decode a trained run.

A Hydra app over conf/sample.yaml (schema: gptfit.config.SampleConfig): `--help` lists every key,
`--cfg job` prints the composed config, `decoding=[greedy,beam] decoding.beam.num_beams=5` picks and
changes settings of the `decoding` group, as in training. Prints each setting's completion side by side
and draws the next-token distribution under the transforms (temperature below and above 1, top-k,
top-p), the greedy path and the beam-search tree. A mistake is one `error:` line and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gptfit.cli import CONF_DIR, hydra_main, on_saved_run
from gptfit.config import SampleConfig, register

register()


def decode(options: SampleConfig, directory) -> None:
    from gptfit.show.decoding import decode_run  # torch and transformers, once the config is sound

    decode_run(options, directory)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    on_saved_run(cfg, SampleConfig, "the run (or saved model) to decode", decode)


if __name__ == "__main__":
    hydra_main(main)()
