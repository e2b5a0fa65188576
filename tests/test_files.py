"""The run folder's atomic writes (gptfit/files.py): a folder swapped in by `atomic_folder` is there, old or new,
whatever step a kill interrupts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptfit import files
from gptfit.files import atomic_folder


class Killed(BaseException):
    """A kill, as far as the code under test can tell: nothing after it runs."""


def saved(folder: Path) -> str | None:
    marker = folder / "weights"
    return marker.read_text() if marker.exists() else None


def save(target: Path, text: str) -> None:
    with atomic_folder(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text(text)


def steps_of_a_save(monkeypatch, target: Path, kill_at: int) -> list[str | None]:
    """Save "new" over "old", killed at the `kill_at`-th filesystem step (rename, exchange, removal): what
    `target` held after every step that ran, and after the kill."""
    seen: list[str | None] = []
    count = {"n": 0}

    def step(real):
        def wrapped(*args, **kwargs):
            count["n"] += 1
            if count["n"] == kill_at:
                raise Killed
            out = real(*args, **kwargs)
            seen.append(saved(target))
            return out

        return wrapped

    for name, real in [("rename", os.rename)]:
        monkeypatch.setattr(files.os, name, step(real))
    monkeypatch.setattr(files, "exchange", step(files.exchange))
    monkeypatch.setattr(files.shutil, "rmtree", step(files.shutil.rmtree))
    try:
        save(target, "new")
    except Killed:
        pass
    seen.append(saved(target))
    return seen


@pytest.mark.parametrize("kill_at", range(1, 6))
def test_a_kill_at_any_step_of_a_folder_swap_leaves_the_old_folder_or_the_new_one(monkeypatch, tmp_path, kill_at):
    target = tmp_path / "final"
    save(target, "old")
    seen = steps_of_a_save(monkeypatch, target, kill_at)
    assert all(state in ("old", "new") for state in seen), seen
    monkeypatch.undo()
    save(target, "newer")  # the next save cleans up whatever the kill left
    assert saved(target) == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_the_fallback_swap_without_renameat2_is_put_back_by_the_next_save(monkeypatch, tmp_path):
    monkeypatch.setattr(files, "_renameat2", None)
    target = tmp_path / "final"
    save(target, "old")
    save(target, "new")
    assert saved(target) == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    renames = {"n": 0}
    real = os.rename

    def second_rename_killed(a, b):
        renames["n"] += 1
        if renames["n"] == 2:  # between moving the old folder aside and moving the new one in
            raise Killed
        real(a, b)

    monkeypatch.setattr(files.os, "rename", second_rename_killed)
    with pytest.raises(Killed):
        save(target, "newer")
    monkeypatch.setattr(files.os, "rename", real)
    assert not target.exists() and saved(tmp_path / "final.old") == "new"
    save(target, "newest")  # the old folder is put back first, then swapped
    assert saved(target) == "newest"


def test_the_swap_is_one_atomic_exchange_on_linux(tmp_path):
    if files._renameat2 is None:
        pytest.fail("renameat2 is missing: this test runs on Linux, where glibc has it")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "x").write_text("b")
    files.exchange(a, b)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
