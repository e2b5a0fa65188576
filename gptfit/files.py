"""The run folder's vocabulary: the names of its files, how they are read, and how every file gptfit keeps is
written (atomically). Below run/ (which writes a run) and show/ (which reads one), so neither imports the other.

A write goes to a temporary file beside its target and is renamed over it: a kill leaves the old file or the
new one, never half of one, and a half-written cache is never picked up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gptfit.errors import UserError

CONFIG = "config.yaml"  # the run's checked config
METRICS = "metrics.jsonl"  # one row per evaluation
SUMMARY = "summary.json"  # the run as it stands: status, final and best values, where things are
SAMPLES = "samples.jsonl"  # every sample of every decoding setting
SEQUENCES = "sequences.parquet"  # the per-sequence table of every memorization evaluation
SEQUENCES_BEST = "sequences_best.parquet"  # the same table of best/, scored at the end (early stopping)
PAGE = "explore.html"  # the run's explorer page


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A temporary path to write `path` through: renamed over it when the block ends, removed if it raises.
    The temporary name keeps the suffix, so writers that add one (numpy's .npy, .npz) add nothing."""
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary folder to write `target` through (a saved model, an adapter): swapped in whole when the
    block ends, so a kill never leaves half of one; the previous folder is removed only after the swap."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_rows(path: Path) -> tuple[list[dict], int]:
    """(the rows of a JSON-lines file, how many lines were dropped): a line cut by a kill ends the file,
    so it and anything after it are dropped."""
    if not path.exists():
        return [], 0
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line]
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows, len(lines) - len(rows)


def read_jsonl(path: Path) -> list[dict]:
    return read_rows(path)[0]


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
