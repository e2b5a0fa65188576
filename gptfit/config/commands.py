"""The schemas of the commands that read a finished run: `python -m gptfit.sample` and `gptfit.attend`.

Each is a Hydra app over the same conf/ folder (conf/sample.yaml, conf/attend.yaml), so its keys are
typed and checked like train's, and `sample` takes its decoding settings from the `decoding` group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from omegaconf import MISSING

from gptfit.config.checks import Checks
from gptfit.config.evaluation import EvalConfig
from gptfit.core.decoding_settings import DecodingConfig

SAVED = ("final", "best")


@dataclass
class SampleConfig:
    # A run directory (its final/ model, or best/ with saved=best) or a saved model directory.
    run: str = MISSING
    saved: str = "final"
    # The settings to decode with (conf/decoding/): decoding=all, decoding=[greedy,beam], ...
    decoding: Dict[str, DecodingConfig] = field(default_factory=dict)
    # The text to continue; null: decode from end-of-text (unconditional samples).
    prompt: Optional[str] = None
    # For every setting (null: each setting's own); decoding.<name>.<key>=value changes one setting.
    max_new_tokens: Optional[int] = None
    # Print each step's candidates (and the beams of beam search).
    trace: bool = False
    # The candidates shown per step.
    top: int = 5
    # Sampling seed (null: the run's own seed).
    seed: Optional[int] = None
    # Where the figures go (null: <run>/samples); plots=false draws none.
    out: Optional[str] = None
    plots: bool = True
    # torch CPU threads (0: torch's default).
    threads: int = 0

    def problems(self) -> list[str]:
        c = Checks("", self)
        c.one_of("saved", SAVED)
        if self.prompt == "":
            c.line("prompt is empty: give some text, or leave prompt out to decode from end-of-text")
        if self.max_new_tokens is not None:
            c.at_least("max_new_tokens", 1)
        if self.seed is not None:
            c.seed("seed")
        c.at_least("top", 1)
        c.threads("threads")
        if not self.decoding:
            c.line("decoding={}: holds no setting; choose one, e.g. decoding=all or decoding=[greedy,beam]")
        for name, setting in self.decoding.items():
            c.problems.extend(setting.problems(f"decoding.{name}"))
        return c.problems


@dataclass
class AttendConfig:
    # A run directory (its final/ model, or best/ with saved=best) or a saved model directory.
    run: str = MISSING
    saved: str = "final"
    # The text whose attention is drawn (by default the prompt of a run's attention pictures).
    prompt: str = EvalConfig.attention_prompt
    # The layer of the line diagram, and its head (null: the mean over heads).
    layer: int = 0
    head: Optional[int] = None
    # Where the figures go (null: <run>/attention).
    out: Optional[str] = None

    def problems(self) -> list[str]:
        c = Checks("", self)
        c.one_of("saved", SAVED)
        if not self.prompt.strip():
            c.line("prompt is empty: give the text whose attention to draw")
        c.at_least("layer", 0)
        if self.head is not None:
            c.at_least("head", 0, " (or head=null for the mean over heads)")
        return c.problems


@dataclass
class ExploreConfig:
    # A run directory: its metrics, per-sequence table and samples, and its final/ model (best/ with
    # saved=best), which the page's text, decoding and attention views re-run.
    run: str = MISSING
    saved: str = "final"
    # Where the page goes (null: <run>/explore.html).
    out: Optional[str] = None
    # Torch threads for the export (0: torch's default).
    threads: int = 0

    def problems(self) -> list[str]:
        c = Checks("", self)
        c.one_of("saved", SAVED)
        c.threads("threads")
        return c.problems
