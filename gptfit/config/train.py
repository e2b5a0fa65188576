"""`train.*`: the optimizer, the schedule, checkpoints, resume, device, precision and the fine-tuning method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from gptfit.config.checks import Checks

DEVICES = ("auto", "cpu", "cuda")
SAMPLING = ("random", "epochs")
PRECISIONS = ("fp32", "bf16")
FINETUNE = ("full", "lora", "top_layers", "head")
GOLDFISH_CONTEXT = ("stream", "document")  # train.goldfish.context


@dataclass
class LoraConfig:
    """train.finetune=lora: the low-rank adapters (peft) added beside the model's layers."""

    # The adapters' rank: each adapted layer gains r x (in + out) trainable parameters.
    r: int = 8
    # The adapters' scale is alpha / r.
    alpha: int = 16
    # Dropout on the adapters' input (0: none).
    dropout: float = 0.0
    # The layers that get an adapter, by name (c_attn, ...); null: the model family's (gptfit/model/finetune.py).
    target_modules: Optional[List[str]] = None


@dataclass
class GoldfishConfig:
    """train.goldfish (Hans et al. 2024): leave about 1/k of the target tokens out of the loss, chosen by a hash of
    the h tokens before each, so every copy of a passage drops the same tokens (gptfit/data/goldfish.py)."""

    # Drop about 1/k of the tokens (null: off; the paper uses 4).
    k: Optional[int] = None
    # The hashed context width in tokens (the paper's 13); a token with fewer tokens before it is never dropped.
    h: int = 13
    # Where the hashed context may reach: stream (across documents) or document (from each document's start,
    # so every copy of a short document drops the same tokens). stream is the default so that runs made before
    # this key existed, which all hashed the stream, come out the same.
    context: str = "stream"


@dataclass
class DpConfig:
    """train.dp: DP-SGD through Opacus (gptfit/run/privacy.py): per-window gradients clipped to max_grad_norm,
    Gaussian noise, Poisson sampling of train.sampling=epochs windows at rate batch_size / windows."""

    # The noise's standard deviation over max_grad_norm (null: off, unless target_epsilon is set). 0 is a
    # control, clipping only: it trains as DP-SGD does but guarantees nothing, so its epsilon is null.
    noise_multiplier: Optional[float] = None
    # Or: the epsilon to reach at train.max_steps; Opacus's accountant picks the noise multiplier.
    target_epsilon: Optional[float] = None
    # Each window's gradient is clipped to this L2 norm before the noise is added.
    max_grad_norm: float = 1.0
    # The delta of (epsilon, delta)-DP, per window. Null: 1 / N^1.1 for N training windows (the privacy units),
    # below 1 / N as the convention asks; 1e-5 is the other usual choice. A value set here must be below 1 / N,
    # checked once N is known: at 1 / N the guarantee allows a window published in full.
    delta: Optional[float] = None

    @property
    def on(self) -> bool:
        return self.noise_multiplier is not None or self.target_epsilon is not None


@dataclass
class SaturationConfig:
    """train.saturation: stop once the memorized bits stop growing (data=uniform's capacity/bits_total, Morris
    et al. 2025 train each model to saturation). Checked at every evaluation from `min_steps` on: saturated at
    step s when the bits grew by less than `growth` (a fraction) since the last evaluation at or before
    (1 - window) x s, and that evaluation came after step 0. train.max_steps stays the cap."""

    # The relative growth below which the bits count as saturated (null: off; for example 0.01).
    growth: Optional[float] = None
    # The trailing share of the steps the growth is measured over.
    window: float = 0.1
    # No stop before this step: a set far above capacity first sits at the uniform loss for a while, its bits
    # noise around 0, before it starts to memorize.
    min_steps: int = 0


@dataclass
class TrainConfig:
    max_steps: int = 1000
    # How training windows are drawn: "random" offsets (with replacement), or "epochs": the training set
    # cut into non-overlapping windows of model.block_size, each seen exactly once per epoch (shuffled
    # anew each epoch, seeded by `seed` and the epoch).
    sampling: str = "random"
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
    # torch.compile the model for training (the Trainer's torch_compile). Off by default: compiling takes
    # seconds before the first step and pays back only on long runs (bench/compile.py measures where).
    compile: bool = False
    # What trains: "full" (every parameter), "lora" (low-rank adapters, train.lora; the saved model is
    # merged), "top_layers" (the last train.finetune_layers blocks and the final norm; embeddings frozen),
    # "head" (the output layer alone, untied from the input embedding).
    finetune: str = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # train.finetune=top_layers: how many of the last blocks train.
    finetune_layers: int = 1
    # Goldfish loss (off: k=null), e.g. train.goldfish.k=4.
    goldfish: GoldfishConfig = field(default_factory=GoldfishConfig)
    # DP-SGD (off: both null), e.g. train.dp.noise_multiplier=1.0 or train.dp.target_epsilon=8.
    dp: DpConfig = field(default_factory=DpConfig)
    # Stop when the memorized bits saturate (off: growth=null), e.g. train.saturation.growth=0.01 on data=uniform.
    saturation: SaturationConfig = field(default_factory=SaturationConfig)

    def problems(self) -> list[str]:
        c = Checks("train", self)
        c.positive("max_steps", "batch_size", "grad_accum", "eval_every", "save_total_limit")
        if self.batch_size > 0 and self.grad_accum > 0 and self.batch_size % self.grad_accum:
            c.line(f"train.batch_size={self.batch_size}: must be divisible by train.grad_accum={self.grad_accum}")
        if c.finite("lr"):
            c.positive("lr")
        if c.finite("weight_decay"):
            c.need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        if c.finite("grad_clip"):
            c.need(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 turns clipping off)")
        if c.finite("min_lr_ratio"):
            c.need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        for key in ("beta1", "beta2"):
            if c.finite(key):
                c.need(0.0 <= getattr(self, key) < 1.0, key, "must be in [0, 1)")
        c.at_least("warmup_steps", 0)
        c.at_least("save_every", 0, " (0: save at every evaluation)")
        c.threads("threads")
        c.one_of("sampling", SAMPLING)
        c.one_of("device", DEVICES)
        c.one_of("precision", PRECISIONS)
        c.one_of("finetune", FINETUNE)
        c.at_least("finetune_layers", 1)
        c.problems.extend(self.lora_problems())
        c.problems.extend(self.goldfish_problems())
        c.problems.extend(self.dp_problems())
        c.problems.extend(self.saturation_problems())
        return c.problems

    def saturation_problems(self) -> list[str]:
        c = Checks("train.saturation", self.saturation)
        if self.saturation.growth is not None and c.finite("growth"):
            c.positive("growth")
        if c.finite("window"):
            c.need(0.0 < self.saturation.window < 1.0, "window", "must be in (0, 1): a share of the steps so far")
        c.need(self.saturation.min_steps >= 0, "min_steps", "must be >= 0")
        return c.problems

    def goldfish_problems(self) -> list[str]:
        c = Checks("train.goldfish", self.goldfish)
        if self.goldfish.k is not None:
            c.at_least("k", 2, " (drops about 1/k of the tokens; null turns goldfish loss off)")
        c.at_least("h", 1)
        c.one_of("context", GOLDFISH_CONTEXT)
        return c.problems

    def dp_problems(self) -> list[str]:
        dp = self.dp
        c = Checks("train.dp", dp)
        if dp.noise_multiplier is not None and dp.target_epsilon is not None:
            c.line(
                f"train.dp: noise_multiplier={dp.noise_multiplier} and target_epsilon={dp.target_epsilon} are both "
                "set; set one (the other follows from it)"
            )
        if dp.noise_multiplier is not None and c.finite("noise_multiplier"):
            c.need(dp.noise_multiplier >= 0, "noise_multiplier", "must be >= 0")
        if dp.target_epsilon is not None and c.finite("target_epsilon"):
            c.positive("target_epsilon")
        if c.finite("max_grad_norm"):
            c.positive("max_grad_norm")
        if dp.delta is not None and c.finite("delta"):
            c.need(0.0 < dp.delta < 1.0, "delta", "must be in (0, 1) (null: 1 / N^1.1, N the training windows)")
        if dp.on and self.grad_accum > 1:
            c.line(
                f"train.grad_accum={self.grad_accum}: DP-SGD (train.dp) samples each step's batch as a whole; "
                "use train.grad_accum=1"
            )
        return c.problems

    def lora_problems(self) -> list[str]:
        """train.lora's own ranges; whether its target modules exist is checked against the model."""
        c = Checks("train.lora", self.lora)
        c.at_least("r", 1)
        if c.finite("alpha"):
            c.positive("alpha")
        if c.finite("dropout"):
            c.need(0.0 <= self.lora.dropout < 1.0, "dropout", "must be in [0, 1)")
        modules = self.lora.target_modules
        if modules is not None:
            c.need(len(modules) > 0, "target_modules", "must be null (the model family's) or a non-empty list")
        return c.problems
