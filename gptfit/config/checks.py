"""The checks a config section runs on its own fields: each problem is one line, `key=value: what is allowed`."""

from __future__ import annotations

import glob
import math
import os
from typing import Any, Iterable


class Checks:
    """Collects the problems of one section; `prefix` names it (`model`, `train`, ...)."""

    def __init__(self, prefix: str, section: Any):
        self.prefix, self.section = prefix, section
        self.problems: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def need(self, ok: bool, name: str, allowed: str, got: Any = None) -> bool:
        """Record `prefix.name=value: allowed` unless ok; returns ok."""
        if not ok:
            value = getattr(self.section, name) if got is None else got
            self.problems.append(f"{self.key(name)}={value!r}: {allowed}")
        return ok

    def line(self, text: str) -> None:
        """A problem said in words of its own."""
        self.problems.append(text)

    def positive(self, *names: str) -> None:
        for name in names:
            self.need(getattr(self.section, name) > 0, name, "must be > 0")

    def at_least(self, name: str, low: int, why: str = "") -> None:
        self.need(getattr(self.section, name) >= low, name, f"must be >= {low}{why}")

    def finite(self, name: str) -> bool:
        value = getattr(self.section, name)
        return self.need(isinstance(value, (int, float)) and math.isfinite(value), name, "must be a finite number")

    def one_of(self, name: str, choices: Iterable[str]) -> None:
        choices = tuple(choices)
        self.need(getattr(self.section, name) in choices, name, f"one of {', '.join(choices)}")

    def threads(self, name: str) -> None:
        """0 (torch's default) up to the CPUs there are: torch would start as many OpenMP threads as asked."""
        cpus = os.cpu_count() or 1
        self.need(
            0 <= getattr(self.section, name) <= cpus,
            name,
            f"must be in 0 .. {cpus} (0: torch's default; this machine has {cpus} CPUs)",
        )

    def seed(self, name: str) -> None:
        """numpy and torch take seeds in 0 .. 2**32 - 1 and raise a traceback for anything else."""
        self.need(0 <= getattr(self.section, name) < 2**32, name, "must be in 0 .. 4294967295 (2**32 - 1)")

    def corpus_path(self, source: str, path: str | None, label: str) -> None:
        """A corpus's `path`: text and hf sources need one, and a text path must exist (a file, a folder or a
        glob pattern). `label` names the source in the line (`data=text`, `source=text`)."""
        if source in ("text", "hf"):
            self.need(bool(path), "path", f"{label}={source} needs a path (file, folder or dataset name)")
        if source == "text" and path:
            expanded = os.path.expanduser(path)
            self.need(
                os.path.exists(expanded) or bool(glob.glob(expanded)),
                "path",
                "no such file or folder; give a text file, a folder or a glob pattern",
            )
