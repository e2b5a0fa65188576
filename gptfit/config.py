"""The configuration schema: one dataclass per config group, registered in Hydra's ConfigStore.

Because the root config extends this schema, Hydra rejects unknown keys and wrong types everywhere,
experiment files included. What a type cannot say (ranges, choices, how fields relate) is checked by
`validate`, which reports every problem at once, one line each.

This module imports only the standard library, hydra, omegaconf and the grammar's spec (pure Python),
so a bad config is reported before torch and transformers are loaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from gptfit.core.sampling.settings import DecodingConfig

from gptfit.data.grammar import GrammarSpec, spec_of
from gptfit.data.grammar import problems as grammar_problems


@dataclass
class ModelConfig:
    # "gpt": gptfit's own decoder-only GPT trained from scratch; "hf": a causal LM from the hub or a folder.
    kind: str = "gpt"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    # The window length for training and evaluation. For kind=gpt it is also the model's context.
    block_size: int = 64
    dropout: float = 0.0
    # Biases in the linear and norm layers (GPT-2 has them; without them the model is a little faster).
    bias: bool = False
    # kind=hf: a hub name or a local directory.
    name_or_path: Optional[str] = None
    # Fine-tune from an earlier run directory (its best/final model) or a saved model directory.
    init_from: Optional[str] = None
    # Hub models may ship their own code; it runs only when this is turned on.
    trust_remote_code: bool = False


@dataclass
class CanaryConfig:
    """A secret planted in the training text (exposure is measured at each evaluation)."""

    name: str = MISSING
    # Every "#" is a secret digit, e.g. "my pin is ####".
    format: str = MISSING
    repeats: int = 1


@dataclass
class GrammarConfig(GrammarSpec):
    """data=grammar: the knobs of the synthetic language (`gptfit.data.grammar.GrammarSpec`, where each is
    explained), and how many sentences it generates for the corpus, one document each."""

    # Enough for the training pool of a 64k-token training set plus the held-out sentences.
    n_sentences: int = 10000


@dataclass
class DataConfig:
    # python_docs (embedded), text (local files), hf (a datasets dataset, hub or saved to disk),
    # grammar (sentences of a synthetic language, `grammar` below).
    source: str = "python_docs"
    # text: a file, a folder or a glob pattern; hf: a hub name or a directory saved with save_to_disk.
    path: Optional[str] = None
    # hf only: the dataset configuration, split and text column.
    hf_config: Optional[str] = None
    split: str = "train"
    text_column: str = "text"
    # text only: one document per paragraph (blank-line separated), line, or whole file (document).
    sample_by: str = "paragraph"
    # Training size in tokens: the first train_tokens of the shuffled training pool (nested subsets).
    train_tokens: int = 4096
    # Seeds the held-out split and the document order, independent of `seed`.
    split_seed: int = 0
    # Share of the corpus's characters held out for validation (whole documents).
    val_fraction: float = 0.1
    # Byte-level BPE vocabulary size for models trained from scratch.
    vocab_size: int = 2048
    # Where tokenizers and encoded corpora are cached (by content hash).
    cache_dir: str = "~/.cache/gptfit"
    # Secrets planted in the training text (kept out of the tokenizer's text and the held-out text).
    canaries: List[CanaryConfig] = field(default_factory=list)
    # data=grammar only (conf/data/grammar.yaml sets it).
    grammar: Optional[GrammarConfig] = None


@dataclass
class TrainConfig:
    max_steps: int = 1000
    # Sequences per optimizer step over all processes (gradient accumulation included).
    batch_size: int = 12
    grad_accum: int = 1
    lr: float = 1e-3
    # Linear warm-up, then cosine decay to min_lr_ratio * lr.
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    # Checkpoints every save_every steps (0: at every evaluation); save_total_limit newest are kept.
    save_every: int = 0
    save_total_limit: int = 2
    # "auto": continue from the newest complete checkpoint in this run's own directory if it has one
    # (a requeued or re-launched job picks up where it stopped); a run directory: continue that run;
    # null: always start from scratch.
    resume: Optional[str] = "auto"
    # auto (CUDA when present, else CPU), cpu, cuda.
    device: str = "auto"
    # CPU threads for torch (0: torch's default).
    threads: int = 0
    # fp32, or bf16: the training forward and backward run under bf16 autocast, while the weights, the
    # optimizer and every evaluation stay in fp32. Needs native bf16 (a recent GPU, or a CPU with
    # AVX512-BF16 or AMX); on this project's CPU it trains the tiny model about 1.5x as fast.
    precision: str = "fp32"


@dataclass
class EvalConfig:
    # Fixed windows on which train and validation loss are measured at every evaluation.
    train_windows: int = 64
    val_windows: int = 64
    # Fixed windows for exact-match memorization and membership inference (at least 256 a side, so
    # that the AUC is not noise; on a small corpus they overlap).
    mia_windows: int = 256
    batch_size: int = 64
    # Extractable memorization: greedy decoding of suffix_tokens from a window's first prefix_tokens.
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    extraction_windows: int = 64
    # Samples under every decoding setting: from held-out prefixes and from these prompts.
    prompts: List[str] = field(default_factory=lambda: ["My cute dog is a"])
    heldout_prompts: int = 8
    prompt_tokens: int = 16
    # A sample "copies" when it holds a verbatim training span of at least copy_span tokens.
    copy_span: int = 16
    max_ngram: int = 8
    # Candidates of the same format each canary is ranked among.
    canary_candidates: int = 255
    # Memorization metrics (exact match, membership inference, extraction, canaries) and samples with
    # their generation metrics at every k-th evaluation (1: at each); both always at the last step.
    memorization_every: int = 1
    generation_every: int = 1
    # Attention pictures of a fixed prompt (W&B images) and each head's entropy (attn/l<layer>h<head>/entropy).
    attention: bool = False
    attention_prompt: str = "My friend was right about this class. It is so fun!"
    # data=grammar only, at the evaluations with samples: held-out sentences scored by the model and by
    # the grammar (grammar/val_nll_model, grammar/val_nll_true). The held-out prompts are the end-of-text
    # token and the first grammar_prompt_tokens tokens of held-out sentences, all different (1: the
    # determiner, so the model chooses the rest of the sentence itself; longer prompts force novel starts).
    grammar_sentences: int = 256
    grammar_prompt_tokens: int = 1


@dataclass
class LoggerConfig:
    # wandb or none.
    backend: str = "wandb"
    project: str = "gptfit"
    entity: Optional[str] = None
    # A sweep's runs share one group, named after the sweep, unless this is set.
    group: Optional[str] = None
    # Default: the experiment name and the run directory, or a sweep job's overrides.
    run_name: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    job_type: str = "train"
    # auto: online when an API key is set, offline otherwise. online, offline, disabled.
    mode: str = "auto"
    # Seconds to wait for the W&B service before falling back to offline.
    init_timeout: float = 10.0


@dataclass
class Config:
    # The experiment's name: the run directory and the W&B run are named after it.
    name: str = "default"
    seed: int = 1337
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # Named decoding settings used for samples and generation metrics (conf/decoding/).
    decoding: Dict[str, DecodingConfig] = field(default_factory=dict)
    # Where the run writes; set by Hydra to its run directory, or by the caller.
    run_dir: str = MISSING


def register() -> None:
    ConfigStore.instance().store(name="gptfit_schema", node=Config)


MODEL_KINDS = ("gpt", "hf")
DATA_SOURCES = ("python_docs", "text", "hf", "grammar")
LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
SAMPLE_BY = ("paragraph", "line", "document")


class ConfigError(ValueError):
    """Every problem found in a config, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _section(schema: type, key: str) -> Optional[type]:
    """The dataclass a field of `schema` holds (`Optional[...]` unwrapped), or None for a plain value."""
    import dataclasses
    import typing

    hint = typing.get_type_hints(schema)[key]
    options = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    return next((t for t in options if dataclasses.is_dataclass(t)), None)


def unknown_keys(cfg: Any, schema: type = None, prefix: str = "") -> list[str]:
    """Keys the schema does not know (Hydra lets `+key=value` add them even to a typed config)."""
    import dataclasses

    schema = schema or Config
    fields = {f.name: f for f in dataclasses.fields(schema)}
    problems = []
    for key in cfg.keys():
        name = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{name}: unknown key; known keys here: {known}")
        elif (section := _section(schema, key)) is not None and cfg[key] is not None:
            problems.extend(unknown_keys(cfg[key], section, f"{name}."))
    return problems


def validate(cfg: Any) -> None:
    """Check ranges, choices and cross-field rules; raise ConfigError listing every problem."""
    problems: list[str] = unknown_keys(cfg)
    if problems:
        raise ConfigError(problems)

    def need(ok: bool, key: str, got: Any, allowed: str) -> None:
        if not ok:
            problems.append(f"{key}={got!r}: {allowed}")

    def positive(key: str, value: Any) -> None:
        need(value > 0, key, value, "must be > 0")

    def finite(key: str, value: Any) -> bool:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        need(ok, key, value, "must be a finite number")
        return ok

    m, d, t, e, lg = cfg.model, cfg.data, cfg.train, cfg.eval, cfg.logger
    need(m.kind in MODEL_KINDS, "model.kind", m.kind, f"one of {', '.join(MODEL_KINDS)}")
    for key in ("n_layer", "n_head", "n_embd", "block_size"):
        positive(f"model.{key}", getattr(m, key))
    if m.n_head > 0 and m.n_embd % m.n_head:
        problems.append(f"model.n_embd={m.n_embd}: must be divisible by model.n_head={m.n_head}")
    if m.block_size < 2:
        problems.append(f"model.block_size={m.block_size}: must be >= 2 (one input and one target)")
    if finite("model.dropout", m.dropout):
        need(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
    if m.kind == "hf":
        need(bool(m.name_or_path), "model.name_or_path", m.name_or_path,
             "model=hf needs a hub name or a local model directory")
    for key, path in (("model.name_or_path", m.name_or_path if m.kind == "hf" else None),
                      ("model.init_from", m.init_from)):
        # A path that is clearly local ("/", ".", "~") must exist; anything else may be a hub name.
        if path and path.startswith(("/", ".", "~")):
            need(os.path.exists(os.path.expanduser(path)), key, path, "no such directory")

    need(d.source in DATA_SOURCES, "data.source", d.source, f"one of {', '.join(DATA_SOURCES)}")
    if d.source in ("text", "hf"):
        need(bool(d.path), "data.path", d.path, f"data={d.source} needs a path (file, folder or dataset name)")
    if d.source == "text" and d.path:
        import glob

        path = os.path.expanduser(d.path)
        need(os.path.exists(path) or bool(glob.glob(path)), "data.path", d.path,
             "no such file or folder; give a text file, a folder or a glob pattern")
    need(d.sample_by in SAMPLE_BY, "data.sample_by", d.sample_by, f"one of {', '.join(SAMPLE_BY)}")
    positive("data.train_tokens", d.train_tokens)
    if finite("data.val_fraction", d.val_fraction):
        need(0.0 < d.val_fraction < 1.0, "data.val_fraction", d.val_fraction, "must be in (0, 1)")
    need(d.vocab_size >= 260, "data.vocab_size", d.vocab_size, "must be >= 260 (256 bytes plus special tokens)")
    if 0 < d.train_tokens < m.block_size:
        problems.append(f"data.train_tokens={d.train_tokens}: must be at least model.block_size={m.block_size}")
    if d.source == "grammar":
        if d.grammar is None:
            problems.append("data.grammar=None: data.source=grammar needs the grammar's knobs; use data=grammar")
        else:
            problems.extend(grammar_problems(spec_of(d.grammar)))
            need(d.grammar.n_sentences >= 2, "data.grammar.n_sentences", d.grammar.n_sentences,
                 "must be >= 2 (some are held out)")

    for key in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_total_limit"):
        positive(f"train.{key}", getattr(t, key))
    if t.batch_size > 0 and t.grad_accum > 0 and t.batch_size % t.grad_accum:
        problems.append(f"train.batch_size={t.batch_size}: must be divisible by train.grad_accum={t.grad_accum}")
    if finite("train.lr", t.lr):
        positive("train.lr", t.lr)
    if finite("train.weight_decay", t.weight_decay):
        need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
    if finite("train.grad_clip", t.grad_clip):
        need(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0 turns clipping off)")
    if finite("train.min_lr_ratio", t.min_lr_ratio):
        need(0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", t.min_lr_ratio, "must be in [0, 1]")
    for key in ("beta1", "beta2"):
        value = getattr(t, key)
        if finite(f"train.{key}", value):
            need(0.0 <= value < 1.0, f"train.{key}", value, "must be in [0, 1)")
    need(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")
    need(t.save_every >= 0, "train.save_every", t.save_every, "must be >= 0 (0: save at every evaluation)")
    need(t.threads >= 0, "train.threads", t.threads, "must be >= 0 (0: torch's default)")
    need(t.device in DEVICES, "train.device", t.device, f"one of {', '.join(DEVICES)}")
    need(t.precision in PRECISIONS, "train.precision", t.precision, f"one of {', '.join(PRECISIONS)}")

    for key in ("train_windows", "val_windows", "batch_size", "prefix_tokens", "suffix_tokens",
                "extraction_windows", "prompt_tokens", "copy_span", "max_ngram", "generation_every",
                "memorization_every", "mia_windows", "grammar_sentences", "grammar_prompt_tokens"):
        positive(f"eval.{key}", getattr(e, key))
    names = [c.name for c in d.canaries]
    for i, c in enumerate(d.canaries):
        need("#" in c.format, f"data.canaries[{i}].format", c.format, 'needs at least one "#" (a secret digit)')
        need(c.repeats >= 1, f"data.canaries[{i}].repeats", c.repeats, "must be >= 1")
        need(names.count(c.name) == 1 and c.name.isidentifier(), f"data.canaries[{i}].name", c.name,
             "must be a unique identifier")
    positive("eval.canary_candidates", e.canary_candidates)
    need(e.heldout_prompts >= 0, "eval.heldout_prompts", e.heldout_prompts, "must be >= 0")
    if e.prefix_tokens + e.suffix_tokens > m.block_size > 0:
        problems.append(f"eval.prefix_tokens + eval.suffix_tokens = {e.prefix_tokens + e.suffix_tokens}: "
                        f"must fit model.block_size={m.block_size}; lower them or raise the block size")
    if e.prompt_tokens >= m.block_size > 0:
        problems.append(f"eval.prompt_tokens={e.prompt_tokens}: must be below model.block_size={m.block_size}")
    if e.grammar_prompt_tokens + 1 >= m.block_size > 0:
        problems.append(f"eval.grammar_prompt_tokens={e.grammar_prompt_tokens}: must be below model.block_size - 1 "
                        f"= {m.block_size - 1} (the prompt also holds the end-of-text token)")
    for i, prompt in enumerate(e.prompts):
        need(bool(prompt.strip()), f"eval.prompts[{i}]", prompt, "must not be empty")

    need(lg.backend in LOGGER_BACKENDS, "logger.backend", lg.backend, f"one of {', '.join(LOGGER_BACKENDS)}")
    need(lg.mode in WANDB_MODES, "logger.mode", lg.mode, f"one of {', '.join(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")  # W&B reads it too, and fails deep inside on a bad value
    if lg.backend == "wandb" and env_mode and env_mode not in ("online", "offline", "disabled", "dryrun", "run"):
        problems.append(f"WANDB_MODE={env_mode!r} (environment): W&B accepts online, offline or disabled; "
                        "set one of those or unset it and use logger.mode")
    positive("logger.init_timeout", lg.init_timeout)

    for name, setting in cfg.get("decoding", {}).items():
        problems.extend(OmegaConf.to_object(setting).problems(f"decoding.{name}"))

    if problems:
        raise ConfigError(problems)
