"""The Hugging Face Trainer as gptfit uses it: its arguments from the config, bf16 autocast for the
training forward only, the running training loss, and the device and precision checks.

The Trainer owns the optimizer step (AdamW, warm-up + cosine, clipping, accumulation, devices,
checkpoints with optimizer/scheduler/RNG state). Its own reporting is off: gptfit measures and logs
its own keys (run/callback.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from gptfit.config import TrainConfig
from gptfit.errors import UserError
from gptfit.files import CHECKPOINTS
from gptfit.run import distributed as dist
from gptfit.run.privacy import Privacy, private_loss


class GptfitTrainer(Trainer):
    """The Trainer, plus a running sum of the training loss between evaluations and bf16 training.

    With precision="bf16" the training forward runs under autocast (the backward follows its dtypes).
    This is done here rather than with TrainingArguments(bf16=True), which makes accelerate wrap the
    model's forward itself, so that every evaluation would run in bf16 too.
    """

    def __init__(self, *args, precision: str = "fp32", privacy: Privacy | None = None, objective=None, **kwargs):
        super().__init__(*args, **kwargs)
        # unlearn.method: the method's loss on each batch of retained windows and forget sequences.
        self.objective = objective
        self.autocast_bf16 = precision == "bf16"
        # train.dp: Opacus's per-sample hooks on the model, its optimizer and Poisson batches (run/privacy.py).
        self.privacy = privacy
        if privacy is not None:
            privacy.attach(self.model)
        self.flops_per_token: int | None = None
        self.loss_sum = torch.zeros(())
        self.loss_steps = 0
        self.finite = torch.ones((), dtype=torch.bool)  # every micro-step's loss since the last check

    def floating_point_ops(self, inputs) -> int:
        # The Trainer's count for total_flos (6 x tokens x non-embedding parameters), asked for at every
        # step; the parameter count walks every module, so it is taken once.
        if self.flops_per_token is None:
            self.flops_per_token = 6 * self.model.num_parameters(exclude_embeddings=True)
        return self.flops_per_token * inputs["input_ids"].numel()

    def compute_loss(self, model, inputs, *args, **kwargs):
        device = self.args.device.type
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            if self.privacy is not None:
                return private_loss(model, inputs)
            if self.objective is not None:
                return self.objective.loss(model, inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.privacy is not None and optimizer is not None:
            self.optimizer = self.privacy.optimizer(optimizer)
        return self.optimizer

    def get_train_dataloader(self):
        if self.privacy is None:
            return super().get_train_dataloader()
        return self.privacy.loader(self.train_dataset, self.data_collator, self.args.max_steps, self.args.seed)

    def log(self, logs: dict, *args, **kwargs) -> None:
        # The Trainer's closing dictionary (train_runtime, ...) is not printed: the run ends on its own summary.
        if "train_runtime" not in logs:
            super().log(logs, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Already divided by the accumulation steps, so micro-steps add up to the step's mean loss.
        self.loss_sum = self.loss_sum.to(loss.device) + loss
        self.loss_steps += 1
        self.finite = self.finite.to(loss.device) & torch.isfinite(loss.detach())
        return loss

    def pop_finite(self) -> bool:
        finite = bool(self.finite)
        self.finite = torch.ones((), dtype=torch.bool)
        return finite

    def pop_running_loss(self) -> float | None:
        """The mean training loss since the last call, over all ranks (every rank calls it together)."""
        if self.loss_steps == 0:
            return None
        value = float(self.loss_sum) * self.args.gradient_accumulation_steps / self.loss_steps
        self.loss_sum, self.loss_steps = torch.zeros(()), 0
        return dist.mean(value)


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda: no CUDA device is visible; use train.device=auto or cpu")
    return choice


def native_bf16(device: str) -> bool:
    """Whether the device computes in bf16 natively (emulated bf16 trains slower than fp32)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_precision(precision: str, device: str) -> None:
    if precision == "bf16" and not native_bf16(device):
        raise UserError(
            f"train.precision=bf16: this {device.upper()} has no native bf16 arithmetic, so bf16 would "
            "train slower than fp32; use train.precision=fp32"
        )


def training_arguments(train: TrainConfig, seed: int, run_dir: Path, device: str) -> TrainingArguments:
    t = train
    world = dist.world_size()
    if t.dp.on and world > 1:
        raise UserError(
            f"train.dp: DP-SGD runs in one process (each step's Poisson batch is drawn whole); run it without "
            f"torchrun (this job has {world} processes)"
        )
    per_device, rest = divmod(t.batch_size, t.grad_accum * world)
    if rest or per_device == 0:
        raise UserError(
            f"train.batch_size={t.batch_size}: must be a multiple of train.grad_accum x processes "
            f"({t.grad_accum} x {world})"
        )
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        max_steps=t.max_steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.beta1,
        adam_beta2=t.beta2,
        max_grad_norm=0.0 if t.dp.on else t.grad_clip,  # under DP-SGD each window's gradient is clipped instead
        warmup_steps=t.warmup_steps,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio},
        save_strategy="steps",
        save_steps=t.save_every or t.eval_every,
        save_total_limit=t.save_total_limit,
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=device == "cpu",
        train_sampling_strategy="sequential",  # the windows are already drawn at random offsets
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step
        dataloader_pin_memory=device == "cuda",
        remove_unused_columns=False,
        disable_tqdm=False,
        torch_compile=t.compile,
    )


def close_progress_bar(trainer: Trainer) -> None:
    for callback in trainer.callback_handler.callbacks:
        bar = getattr(callback, "training_bar", None)
        if bar is not None:
            bar.close()
            callback.training_bar = None


def out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)
    )
