"""A run folder, read: its config restored to the typed `Config`, its metric rows, its summary, its
per-sequence tables and its saved models. Every reader of a written run (the report and its sections, mia,
explore, sample, attend, the sweep's page) takes it from here.

Folders written by earlier versions read the same way: keys the schema has gained since take their defaults,
keys it has lost are dropped (users keep old sweeps). A folder without a config (a job that never started)
reads as the schema's defaults, and says so (`has_config`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from gptfit.config import Config
from gptfit.errors import UserError
from gptfit.files import (
    CONFIG,
    FINAL_MODEL,
    METRICS,
    SAMPLES,
    SEQUENCES,
    SEQUENCES_BEST,
    SUMMARY,
    read_jsonl,
    saved_model_dir,
)

OVERRIDES = ".hydra/overrides.yaml"  # Hydra's record of a multirun job's command-line overrides


@dataclass
class RunRecord:
    dir: Path
    # The run's name in a report: its folder's name, or its path from the report's folder (`a/0`).
    job: str
    summary: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    # The overrides of the multirun job that made it, {key: value} (the experiment and Hydra's own left out).
    swept: dict = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path, job: str | None = None) -> RunRecord:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such run directory")
        summary_file = folder / SUMMARY
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        return cls(folder, job or folder.name, summary, read_jsonl(folder / METRICS), swept_of(folder))

    def renamed(self, job: str) -> RunRecord:
        return dataclasses.replace(self, job=job)

    @cached_property
    def saved_config(self) -> dict:
        """The config as the run wrote it (config.yaml; a summary's copy for folders that have only that)."""
        if (self.dir / CONFIG).exists():
            return OmegaConf.to_container(OmegaConf.load(self.dir / CONFIG)) or {}
        return self.summary.get("config") or {}

    @property
    def has_config(self) -> bool:
        return bool(self.saved_config)

    @cached_property
    def config(self) -> Config:
        """The run's config as the typed `Config` of today's schema."""
        return restore(self.saved_config)

    @property
    def status(self) -> str:
        """finished, failed, unfinished (killed while running) or not started."""
        status = self.summary.get("status", "not started")
        return "unfinished" if status == "running" else status

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def error(self) -> str | None:
        return self.summary.get("error")

    @property
    def final(self) -> dict:
        """Every figure of the last evaluation."""
        return self.summary.get("final", {})

    @property
    def wall_time_s(self) -> float | None:
        return self.summary.get("wall_time_s")

    @property
    def trainable_params(self) -> int | None:
        return self.summary.get("trainable_params")

    @property
    def train_tokens(self) -> int | None:
        if self.has_config:
            return self.config.data.train_tokens
        return self.swept.get("data.train_tokens")

    @property
    def method(self) -> str:
        """How the model was trained: full, lora, top_layers or head."""
        return self.config.train.finetune

    @property
    def group(self) -> str | None:
        return self.config.logger.group if self.has_config else None

    @cached_property
    def samples(self) -> list[dict]:
        """Every sample of every decoding setting (samples.jsonl's rows)."""
        return read_jsonl(self.dir / SAMPLES)

    def table(self, best: bool = False, columns: list[str] | None = None):
        """The per-sequence table (a pyarrow Table) of every memorization evaluation, or (best=True) of best/'s
        scoring; None where the run wrote none."""
        path = self.dir / (SEQUENCES_BEST if best else SEQUENCES)
        if not path.exists():
            return None
        import pyarrow.parquet as pq  # the readers that need no table do not pay for pyarrow

        return pq.read_table(path, columns=columns)

    def last_table(self, best: bool = False, columns: list[str] | None = None):
        """The per-sequence table's rows of its last evaluation; None where the run wrote none."""
        import pyarrow.compute as pc

        table = self.table(best, None if columns is None else list(dict.fromkeys([*columns, "step"])))
        if table is None:
            return None
        return table.filter(pc.equal(table["step"], pc.max(table["step"])))

    def model_dir(self, which: str = FINAL_MODEL) -> Path:
        return saved_model_dir(str(self.dir), which)


def swept_of(folder: Path) -> dict:
    overrides_file = folder / OVERRIDES
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    swept = {}
    for item in overrides or []:
        key, _, value = item.lstrip("+~").partition("=")
        if not key.startswith(("experiment", "hydra")):
            swept[key] = yaml.safe_load(value)
    return swept


def restore(saved: dict) -> Config:
    """`saved` over today's schema: the keys it does not know dropped, the ones it lacks at their defaults."""
    schema = OmegaConf.structured(Config)
    known = _known(saved, schema)
    known.setdefault("run_dir", "")
    return OmegaConf.to_object(OmegaConf.merge(schema, known))


def _known(node: Any, schema: Any) -> Any:
    """The part of `node` that `schema` (a typed OmegaConf node) has keys for, at every depth."""
    if not isinstance(node, dict) or not OmegaConf.is_dict(schema):
        return node
    if OmegaConf.get_type(schema) is dict:  # a free mapping (the decoding settings): every key is known
        return node
    out = {}
    for key, value in node.items():
        if value is None and OmegaConf.is_dict(OmegaConf.select(schema, key, default=None)):
            continue  # a section saved as null (off) before it always existed: its defaults are off
        if key in schema:
            inner = OmegaConf.select(schema, key, default=None) if value is not None else None
            out[key] = _known(value, inner) if inner is not None else value
    return out
