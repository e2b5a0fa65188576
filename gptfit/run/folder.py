"""The run folder: made writable before anything is written, removed again when a run never used it.

Light on purpose (standard library only): the commands call it before torch is imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
