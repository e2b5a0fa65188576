"""The body of `python -m gptfit.explore`: a finished run's page, from its folder (its config, corpus and saved
model). The page itself is gptfit.page's, which every run also writes at its end (eval.explore)."""

from __future__ import annotations

from pathlib import Path

import torch

from gptfit.config import ExploreConfig
from gptfit.data.corpus import run_corpus
from gptfit.errors import UserError
from gptfit.files import CONFIG
from gptfit.model.loading import load_pretrained
from gptfit.page.write import run_page
from gptfit.record import RunRecord


def explore_saved_run(options: ExploreConfig, model_dir: Path) -> Path:
    """`python -m gptfit.explore`: the run's config and corpus from its folder, its saved model, its page."""
    run_dir = Path(options.run).expanduser()
    if not (run_dir / CONFIG).exists():
        raise UserError(
            f"run={options.run!r}: no config.yaml there; give a run directory (a saved model alone "
            "has no metrics, table or samples to show)"
        )
    if options.threads:
        torch.set_num_threads(options.threads)
    config = RunRecord.read(run_dir).config
    model, tokenizer = load_pretrained(str(model_dir), attn_implementation="eager")
    corpus = run_corpus(config.model, config.data, config.eval)
    return run_page(
        run_dir, model, tokenizer, corpus, config.eval, config.model.block_size, config.seed, config.name, options.out
    )
