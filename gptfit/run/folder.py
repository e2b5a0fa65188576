"""The run folder: made writable before anything is written, removed again when a run never used it,
and the saved models and seed that the commands reading a run find in it.

Light on purpose (the standard library and omegaconf): the commands call it before torch is imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from gptfit.errors import UserError


def discard_unused_run_dir(run_dir: str | None) -> None:
    """Remove a run directory that Hydra made but the run never used (only .hydra/ and the log inside)."""
    if not run_dir:
        return
    path = Path(run_dir)
    if path.is_dir() and {p.name for p in path.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(path, ignore_errors=True)
        try:
            path.parent.rmdir()  # the experiment's folder, if this was its only run
        except OSError:
            pass


def make_writable_run_dir(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run directory {run_dir} is not writable; choose another with hydra.run.dir=...")
    return run_dir


def saved_model_dir(run: str, which: str) -> Path:
    """The model a command reads: a saved model directory itself, or `which` (final/best) of a run directory."""
    path = Path(run).expanduser()
    if not path.is_dir():
        raise UserError(f"run={run!r}: no such run directory")
    if (path / "config.json").exists():
        return path
    if not (path / which / "config.json").exists():
        other = "best" if which == "final" else "final"
        raise UserError(f"run={run!r}: no saved model in {which}/ (did the run finish?); try saved={other}")
    return path / which


def run_seed(run: str) -> int:
    """A run's own `seed` (it also seeds sampling), from Hydra's record of it; 0 for a bare model directory."""
    path = Path(run).expanduser() / ".hydra" / "config.yaml"
    if path.exists():
        seed = OmegaConf.load(path).get("seed")
        if isinstance(seed, int):
            return seed
    return 0
