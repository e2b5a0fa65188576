"""The run folder's vocabulary: the names of its files, how they are read, and how every file gptfit keeps is
written (atomically). Below run/ (which writes a run) and show/ (which reads one), so neither imports the other.

A write goes to a temporary file beside its target and is renamed over it: a kill leaves the old file or the
new one, never half of one, and a half-written cache is never picked up.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
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
SAMPLES_MD = "samples.md"  # the samples, for reading
FINAL_MODEL = "final"  # the model at the end (a Hugging Face folder)
BEST_MODEL = "best"  # the model at the lowest val/loss
ADAPTER = "adapter"  # train.finetune=lora: the adapter alone, for peft
TOKENIZER = "tokenizer"  # the run's tokenizer
CHECKPOINTS = "checkpoints"  # the Trainer's checkpoints, to resume from
SUBSET = "subset.json"  # data.subset: which candidates this shadow model trained on
MIA_ROC = "mia_roc.png"  # the ROC of every membership score at the last evaluation
LOSS_FIGURE = "loss.png"
MEMORIZATION_FIGURE = "memorization.png"


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
    block ends, so a kill at any point leaves the old folder or the new one, never half of one nor none."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    if old.exists() and not target.exists():  # a kill inside `exchange`'s fallback: the old folder goes back
        os.rename(old, target)
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    if target.exists():
        exchange(tmp, target)  # one step: `target` is the new folder, `tmp` the old one
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.rename(tmp, target)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths in one atomic step (Linux's renameat2 with RENAME_EXCHANGE). Where the system has no such
        call, three renames; a kill between the first two leaves `b` as `b.old`, which the next `atomic_folder` puts
    back."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(ctypes.get_errno(), f"could not swap {a} and {b}")
    old = b.with_name(b.name + ".old")
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):
        return None


_renameat2 = _libc_renameat2() if sys.platform.startswith("linux") else None
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


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
        other = BEST_MODEL if which == FINAL_MODEL else FINAL_MODEL
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
