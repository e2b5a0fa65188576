"""`python -m gptfit.attend run=<run dir> prompt="..." layer=0 head=1`: draw the attention of a trained run.

A Hydra app over conf/attend.yaml (schema: gptfit.config.AttendConfig): `--help` lists every key,
`--cfg job` prints the composed config. Writes attention_heatmaps.png (layers x heads),
attention_lines.png (each token linked to the earlier tokens it attends to) and attention_heads.png
(entropy and copying score per head), and prints where. A mistake is one `error:` line and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gptfit.cli import CONF_DIR, hydra_main, on_saved_run
from gptfit.config import AttendConfig, register

register()


def draw(options: AttendConfig, directory) -> None:
    from gptfit.show.attention import draw_run_attention  # torch and transformers, once the config is sound

    for path in draw_run_attention(options, directory):
        print(f"figure: {path}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="attend")
def main(cfg: DictConfig) -> None:
    on_saved_run(cfg, AttendConfig, "the run (or saved model) whose attention to draw", draw)


if __name__ == "__main__":
    hydra_main(main)()
