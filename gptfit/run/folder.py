"""The run folder: locked by the one process that writes it, made writable before anything is written,
removed again when a run never used it, and the saved models and seed that the commands reading a run
find in it.

The lock is `fcntl.flock` on `LOCK_NAME` in the folder, held until the process ends: the operating
system releases it at any death, kill -9 included, so a lock left by a dead process never blocks.

Light on purpose (the standard library and omegaconf): the commands call it before torch is imported.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

from gptfit.errors import UserError

LOCK_NAME = ".gptfit.lock"  # holds the pid of the process that writes the folder
_held: dict[str, int] = {}  # folder -> file descriptor of the lock this process holds


def lock_run_dir(run_dir: Path) -> None:
    """Hold `run_dir`'s lock until this process ends (a second call is a no-op); UserError when another
    process holds it. Reading the holder's pid writes nothing, so the running run's files stay as they are."""
    key = str(Path(run_dir).resolve())
    if key in _held:
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(
            f"run folder {run_dir} is in use by another gptfit process (pid {holder}); wait for it to end, "
            "or choose another folder with hydra.run.dir=..."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd


def release_run_dir(run_dir: Path) -> None:
    fd = _held.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


def locked_by_another(run_dir: Path) -> bool:
    """Whether another process holds `run_dir`'s lock right now."""
    path = Path(run_dir) / LOCK_NAME
    if str(Path(run_dir).resolve()) in _held or not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def discard_unused_run_dir(run_dir: str | None) -> None:
    """Remove a run directory that Hydra made but the run never used (only .hydra/, the log and the lock
    inside), unless another process holds its lock."""
    if not run_dir:
        return
    path = Path(run_dir)
    if not path.is_dir() or locked_by_another(path):
        return
    if {p.name for p in path.iterdir()} <= {".hydra", "train.log", LOCK_NAME}:
        release_run_dir(path)
        shutil.rmtree(path, ignore_errors=True)
        try:
            path.parent.rmdir()  # the experiment's folder, if this was its only run
        except OSError:
            pass


# How a full disk (or a file-size limit) shows: OSError, or the text of the error of a library that wraps it
# (safetensors' Rust IoError, torch's "file write failed").
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL_TEXT = (
    "No space left on device",
    "File too large",
    "Disk quota exceeded",
    "os error 28",
    "os error 27",
    "os error 122",
    "FileTooLarge",
    "StorageFull",
)


def disk_full(e: BaseException) -> bool:
    """Whether `e`, or an error it was raised from, says that a write found no space."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL or any(t in str(e) for t in _FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def make_writable_run_dir(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run directory {run_dir} is not writable; choose another with hydra.run.dir=...")
    return run_dir
