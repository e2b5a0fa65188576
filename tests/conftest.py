"""Shared fixtures: tiny configs composed through Hydra, and trained runs shared across tests (session scope)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A model and run small enough to train in seconds; tests override what they study.
TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=48",
    "data.train_tokens=1024",
    "data.vocab_size=512",
    "train.max_steps=20",
    "train.batch_size=8",
    "train.eval_every=5",
    "train.warmup_steps=2",
    "train.lr=5e-3",
    "eval.train_windows=16",
    "eval.val_windows=16",
    "eval.mia_windows=16",
    "eval.batch_size=16",
    "eval.prefix_tokens=8",
    "eval.suffix_tokens=8",
    "eval.extraction_windows=8",
    "eval.heldout_prompts=2",
    "eval.prompt_tokens=4",
    "eval.copy_span=6",
    "logger=none",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def compose_cfg(cache_dir):
    """compose(overrides, run_dir) -> the config `python -m gptfit.train` would build."""
    from hydra import compose, initialize_config_dir

    from gptfit.config import register

    register()

    def _compose(overrides: list[str], run_dir: Path | str = "unused"):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=[f"data.cache_dir={cache_dir}", f"run_dir={run_dir}", *overrides])

    return _compose


def run_cli(*args: str, module: str = "gptfit.train", cwd: Path = ROOT, env: dict | None = None, timeout=300):
    """Run a gptfit command in a subprocess, as a user would."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None removes a variable
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_run(compose_cfg, tmp_path_factory):
    """A finished tiny run on the embedded corpus: (run_dir, summary)."""
    from gptfit.run.training import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_cfg([*TINY, "train.save_every=10", "train.save_total_limit=3"], run_dir)
    return run_dir, train(cfg)
