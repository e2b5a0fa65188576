"""`model.*`: gptfit's own GPT trained from scratch, or a causal LM from the hub or a folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from gptfit.config.checks import Checks

MODEL_KINDS = ("gpt", "hf", "base")


@dataclass
class ModelConfig:
    # "gpt": gptfit's own decoder-only GPT trained from scratch; "hf": a causal LM from the hub or a folder;
    # "base": gptfit's GPT pretrained on general text (model.base), trained into data.cache_dir on first use.
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
    # kind=base: the overrides that make the base model's run (cached by the hash of its corpus and config).
    base: List[str] = field(default_factory=lambda: ["+experiment=pretrain_base"])

    def problems(self) -> list[str]:
        c = Checks("model", self)
        c.one_of("kind", MODEL_KINDS)
        c.positive("n_layer", "n_head", "n_embd", "block_size")
        if self.n_head > 0 and self.n_embd % self.n_head:
            c.line(f"model.n_embd={self.n_embd}: must be divisible by model.n_head={self.n_head}")
        if self.block_size < 2:
            c.line(f"model.block_size={self.block_size}: must be >= 2 (one input and one target)")
        if c.finite("dropout"):
            c.need(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        if self.kind == "base":
            c.need(bool(self.base), "base", "model=base needs the overrides of the base model's run")
        if self.kind == "hf":
            c.need(bool(self.name_or_path), "name_or_path", "model=hf needs a hub name or a local model directory")
        for key, path in (
            ("name_or_path", self.name_or_path if self.kind == "hf" else None),
            ("init_from", self.init_from),
        ):
            # A path that is clearly local ("/", ".", "~") must exist; anything else may be a hub name.
            if path and path.startswith(("/", ".", "~")):
                c.need(os.path.exists(os.path.expanduser(path)), key, "no such directory")
        return c.problems
