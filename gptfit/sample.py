"""`python -m gptfit.sample run=<run dir> decoding=all prompt="..." trace=true`: decode a trained run.

A Hydra app over conf/sample.yaml (schema: gptfit.config.SampleConfig): `--help` lists every key,
`--cfg job` prints the composed config, `decoding=[greedy,beam] decoding.beam.num_beams=5` picks and
changes settings of the `decoding` group, as in training. Prints each setting's completion side by side
and draws the next-token distribution under the transforms (temperature below and above 1, top-k,
top-p), the greedy path and the beam-search tree. A mistake is one `error:` line and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from gptfit.cli import CONF_DIR, fail, hydra_main
from gptfit.config import ConfigError, SampleConfig, register, validate
from gptfit.errors import UserError
from gptfit.run.folder import saved_model_dir

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        if OmegaConf.is_missing(cfg, "run"):
            raise UserError("run=<run dir> is required: the run (or saved model) to decode")
        options: SampleConfig = validate(cfg, SampleConfig)
        directory = saved_model_dir(options.run, options.saved)
        from gptfit.show.decoding import decode_run  # torch and transformers, once the config is sound

        decode_run(options, directory)
    except ConfigError as e:
        fail(e.problems)
    except UserError as e:
        fail([str(e)])


if __name__ == "__main__":
    hydra_main(main)()
