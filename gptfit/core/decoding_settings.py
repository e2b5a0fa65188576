"""A decoding setting: the schema every command shares (conf/decoding/), its checks, and its strategy.

Pure Python (no torch), so that a command's config is checked before the heavy libraries load:
`gptfit.config` takes `DecodingConfig` from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gptfit.errors import UserError

STRATEGIES = ("greedy", "sample", "beam", "beam_sample")


@dataclass
class DecodingConfig:
    """One decoding setting, every value explicit (no library default is inherited)."""

    # False: greedy (num_beams=1) or beam search; True: sampling with the transforms below.
    do_sample: bool = False
    # Sampling only. temperature 0 means greedy.
    temperature: float = 1.0
    # 0 turns top-k off; top_p 1.0 turns top-p off.
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    num_return_sequences: int = 1
    max_new_tokens: int = 32

    def problems(self, prefix: str = "decoding") -> list[str]:
        """What is wrong with this setting, one line per problem (`prefix.key=value: what is allowed`)."""
        problems = []

        def need(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                problems.append(f"{prefix}.{key}={getattr(self, key)!r}: {allowed}")

        t = self.temperature
        need(
            isinstance(t, (int, float)) and math.isfinite(t) and t >= 0,
            "temperature",
            "must be a finite number >= 0 (0 means greedy)",
        )
        need(self.top_k >= 0, "top_k", "must be >= 0 (0 turns top-k off)")
        need(
            isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1,
            "top_p",
            "must be in (0, 1] (1 turns top-p off)",
        )
        need(self.num_beams >= 1, "num_beams", "must be >= 1")
        need(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        need(math.isfinite(self.length_penalty), "length_penalty", "must be a finite number")
        need(self.num_return_sequences >= 1, "num_return_sequences", "must be >= 1")
        if not self.do_sample and self.num_beams >= 1 and self.num_return_sequences > self.num_beams:
            need(False, "num_return_sequences", f"must be <= num_beams={self.num_beams} without sampling")
        return problems


def as_setting(setting: Any = None, name: str = "decoding", **overrides) -> DecodingConfig:
    """A checked `DecodingConfig` from a DecodingConfig, a dict, a DictConfig or None (the defaults).

    Raises UserError naming `name.key` for an unknown key, a wrong type or a value out of range.
    """
    if setting is None:
        values = {}
    elif dataclasses.is_dataclass(setting):
        values = dataclasses.asdict(setting)
    else:
        values = {k: setting[k] for k in setting.keys()}
    values.update(overrides)
    kinds = {"bool": bool, "int": int, "float": float}
    fields = {f.name: kinds[str(f.type)] for f in dataclasses.fields(DecodingConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{name}.{unknown[0]}: unknown key; known keys: {', '.join(sorted(fields))}")
    for key, value in values.items():
        kind = fields[key]
        # bool is an int to Python; a float field takes an int (YAML writes `2` for 2.0), nothing else mixes.
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
        if not ok:
            raise UserError(f"{name}.{key}={value!r}: must be {'an integer' if kind is int else 'a ' + kind.__name__}")
        values[key] = kind(value)
    s = DecodingConfig(**values)
    problems = s.problems(name)
    if problems:
        raise UserError("; ".join(problems))
    return s


def strategy_of(setting: Any) -> str:
    """greedy, sample, beam or beam_sample (temperature 0 turns sampling into its greedy counterpart)."""
    sampling = bool(setting.do_sample) and setting.temperature > 0
    if setting.num_beams > 1:
        return "beam_sample" if sampling else "beam"
    return "sample" if sampling else "greedy"
