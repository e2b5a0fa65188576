"""The configuration schema: one dataclass per config group, registered in Hydra's ConfigStore.

Because the root config extends this schema, Hydra rejects unknown keys and wrong types everywhere,
experiment files included. Every default is stated here, once; a group file (conf/<group>/<option>.yaml)
holds only what its option changes. What a type cannot say (ranges, choices) each section checks
next to its fields (`problems()`); `validate` adds the few rules that join sections, and reports every
problem at once, one line each.

The rooms: model.py, data.py, train.py, evaluation.py, logger.py, unlearn.py (the sections of a training run),
commands.py (sample and attend), checks.py (the one-line checks they share). The decoding settings'
schema lives with decoding, in gptfit.core.decoding_settings.

This package imports only the standard library, hydra, omegaconf, the grammar's spec and the decoding
settings (pure Python), so a bad config is reported before torch and transformers are loaded.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from gptfit.config.checks import Checks
from gptfit.config.commands import AttendConfig, ExploreConfig, SampleConfig
from gptfit.config.data import (
    DataConfig,
    DuplicatesConfig,
    ForgetConfig,
    GrammarConfig,
    UniformConfig,
)
from gptfit.config.evaluation import MAX_ENUMERATED, EvalConfig, GeneralCorpus, general_corpora
from gptfit.config.logger import LoggerConfig
from gptfit.config.model import ModelConfig
from gptfit.config.train import DpConfig, TrainConfig
from gptfit.config.unlearn import UnlearnConfig
from gptfit.core.decoding_settings import DecodingConfig

__all__ = [
    "AttendConfig",
    "ExploreConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DecodingConfig",
    "DpConfig",
    "DuplicatesConfig",
    "EvalConfig",
    "ForgetConfig",
    "GeneralCorpus",
    "GrammarConfig",
    "LoggerConfig",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "UniformConfig",
    "UnlearnConfig",
    "as_dict",
    "general_corpora",
    "register",
    "unknown_keys",
    "validate",
]


@dataclass
class Config:
    # The experiment's name: the run directory and the W&B run are named after it.
    name: str = "default"
    # Initialization, data order and sampling.
    seed: int = 1337
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    # Named decoding settings used for samples and generation metrics (conf/decoding/).
    decoding: Dict[str, DecodingConfig] = field(default_factory=dict)
    # Where the run writes; set by Hydra to its run directory, or by the caller.
    run_dir: str = MISSING

    def problems(self) -> list[str]:
        """Each section's own problems, then the rules that join sections."""
        own = Checks("", self)
        own.seed("seed")
        problems = [
            *own.problems,
            *self.model.problems(),
            *self.data.problems(),
            *self.train.problems(),
            *self.eval.problems(),
            *self.logger.problems(),
            *self.unlearn.problems(),
        ]
        block = self.model.block_size
        uniform = self.data.uniform if self.data.source == "uniform" else None
        if uniform is not None:
            problems += self.uniform_problems(uniform)
        elif self.train.saturation.growth is not None:
            problems.append(
                "train.saturation: stops when data=uniform's memorized bits saturate; use "
                "data=uniform or train.saturation.growth=null"
            )
        if uniform is None and 0 < self.data.train_tokens < block:
            problems.append(f"data.train_tokens={self.data.train_tokens}: must be at least model.block_size={block}")
        problems += self.eval.window_problems(block, grammar=self.data.source == "grammar")
        forget = self.data.forget
        if forget.on and forget.until_step >= self.train.max_steps:
            problems.append(
                f"data.forget.until_step={forget.until_step}: must be below train.max_steps="
                f"{self.train.max_steps}, or nothing is left to forget in"
            )
        if forget.on and self.train.dp.on:
            problems.append(
                "data.forget: cannot be combined with train.dp (DP-SGD samples the epochs' windows, which "
                "data.forget cannot cut); drop one of them"
            )
        if forget.on and self.train.sampling == "epochs":
            problems.append(
                "data.forget: works with train.sampling=random only (epochs would need a new cut of "
                "the windows at until_step); use train.sampling=random"
            )
        if self.eval.pretraining_sequences and self.model.kind != "base":
            problems.append(
                f"eval.pretraining_sequences={self.eval.pretraining_sequences}: follows what the base memorized of "
                "its own training text, so it needs model=base; use model=base or eval.pretraining_sequences=0"
            )
        for name, setting in self.decoding.items():
            problems += setting.problems(f"decoding.{name}")
        if self.eval.canary_rank == "enumerate":
            problems += [
                f"data.canaries[{i}].format={c.format!r}: {c.space_size:.0e} fillings, over the "
                f"{MAX_ENUMERATED:.0e} eval.canary_rank=enumerate scores; use eval.canary_rank=auto (a skew-normal "
                "fit for it)"
                for i, c in enumerate(self.data.canaries)
                if c.space_size > MAX_ENUMERATED
            ]
        return problems

    def uniform_problems(self, uniform: UniformConfig) -> list[str]:
        """data=uniform against the model and the table: a sequence fits the model's window, the table's
        sequences are the uniform sequences themselves, and the training stream holds a training window."""
        problems, block, length = [], self.model.block_size, uniform.length
        span = self.eval.prefix_tokens + self.eval.suffix_tokens
        stream = uniform.sequences * (length + 1)  # each sequence and its end-of-text
        if length > block:
            problems.append(
                f"data.uniform.length={length}: must be at most model.block_size={block}; lower it or raise "
                "the block size"
            )
        elif length != span and length >= 2:
            problems.append(
                f"eval.prefix_tokens + eval.suffix_tokens = {span}: must equal data.uniform.length={length} "
                f"(the table's rows are the sequences); e.g. eval.prefix_tokens={length // 2} "
                f"eval.suffix_tokens={length - length // 2}"
            )
        elif 0 < stream < block:
            problems.append(
                f"data.uniform.sequences={uniform.sequences}: its {stream} tokens (with end-of-text) must "
                f"hold one window of model.block_size={block}; raise it or lower the block size"
            )
        if self.model.kind != "gpt" or self.eval.general:
            problems.append(
                "data=uniform: its tokenizer spells its symbols only, so it trains gptfit's GPT (model.kind=gpt, "
                "or model.init_from a data=uniform run) with no eval.general text; drop the other model or corpora"
            )
        return problems


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="gptfit_schema", node=Config)
    store.store(name="sample_schema", node=SampleConfig)
    store.store(name="attend_schema", node=AttendConfig)
    store.store(name="explore_schema", node=ExploreConfig)


class ConfigError(ValueError):
    """Every problem found in a config, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _section(schema: type, key: str) -> Optional[type]:
    """The dataclass a field of `schema` holds (`Optional[...]` unwrapped), or None for a plain value."""
    hint = typing.get_type_hints(schema)[key]
    options = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    return next((t for t in options if dataclasses.is_dataclass(t)), None)


def unknown_keys(node: Any, schema: type = Config, prefix: str = "") -> list[str]:
    """Keys the schema does not know (Hydra lets `+key=value` add them even to a typed config)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    problems = []
    for key in node.keys():
        name = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{name}: unknown key; known keys here: {known}")
        elif (section := _section(schema, key)) is not None and node[key] is not None:
            problems.extend(unknown_keys(node[key], section, f"{name}."))
    return problems


def as_dict(section: Any) -> dict:
    """A checked section (or the whole config) as plain Python containers, the way config.yaml holds it."""
    return OmegaConf.to_container(OmegaConf.structured(section))


def validate(composed: Any, schema: type = Config) -> Any:
    """The config as `schema`'s dataclasses, checked: raise ConfigError listing every problem."""
    problems = unknown_keys(composed, schema)
    if problems:
        raise ConfigError(problems)
    checked = OmegaConf.to_object(composed)
    problems = checked.problems()
    if problems:
        raise ConfigError(problems)
    return checked
