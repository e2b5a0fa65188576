"""Checkpoints and resume: which checkpoint counts, how the run's state beside the Trainer's is kept in
it, and the atomic writes of `final/` and `best/`.

A checkpoint counts only once it holds `COMPLETE`, written after everything else by `write_marker`.
The marker also carries what the Trainer does not keep: the W&B run id and the running training loss.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from transformers.trainer_pt_utils import safe_globals  # the numpy RNG types the Trainer allows

from gptfit.config import DataConfig, ModelConfig, TrainConfig, as_dict
from gptfit.errors import UserError
from gptfit.files import CHECKPOINTS, CONFIG, atomic_folder, write_text_atomic
from gptfit.record import restore

COMPLETE = "gptfit_complete.json"  # written into a checkpoint after everything else: only then it counts


def unreadable(ckpt: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a missing marker, a cut or corrupt file), or None.

    Tensors are read as safetensors; the Trainer's optimizer, scheduler and RNG states with
    `torch.load(weights_only=True)`, which refuses pickles that would run code."""
    try:
        marker = json.loads((ckpt / COMPLETE).read_text())
        int(marker["step"])
        json.loads((ckpt / "trainer_state.json").read_text())
        weights = sorted(ckpt.glob("*.safetensors"))
        if not weights:
            return "no model.safetensors"
        for f in weights:
            with safe_open(str(f), "pt") as st:
                for key in st.keys():
                    st.get_slice(key)
        for f in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth")]):
            with safe_globals():
                torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} missing" if e.filename else "a file is missing"
    except Exception as e:  # torch and safetensors raise several types for cut or tampered files
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return None


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run; half-written or corrupt ones are skipped with a warning."""
    candidates = []
    for ckpt in (run_dir / CHECKPOINTS).glob("checkpoint-*"):
        try:
            candidates.append((int(ckpt.name.split("-")[-1]), ckpt))
        except ValueError:
            continue
    for _, ckpt in sorted(candidates, reverse=True):
        problem = unreadable(ckpt)
        if problem is None:
            return ckpt
        warnings.warn(f"skipping incomplete or corrupt checkpoint {ckpt} ({problem})", stacklevel=2)
    return None


def save_model_atomic(model, tokenizer, target: Path) -> None:
    """The model and its tokenizer, swapped in whole: a kill never leaves a half-written model."""
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def check_resume(run_dir: Path, train: TrainConfig, model: ModelConfig, data: DataConfig) -> tuple[Path, Path | None]:
    """(the directory the run writes to, the checkpoint it continues from, or None). A run resumes only
    with the model and data sections it started with."""
    if not train.resume:
        return run_dir, None
    target = run_dir if train.resume == "auto" else Path(train.resume).expanduser()
    if train.resume != "auto" and not target.is_dir():
        raise UserError(f"train.resume={train.resume!r}: no such run directory")
    ckpt = find_checkpoint(target)
    if ckpt is None:
        if train.resume == "auto":
            return run_dir, None
        raise UserError(
            f"train.resume={train.resume!r}: no complete checkpoint in {target / 'checkpoints'}; "
            "start a new run instead"
        )
    saved = target / CONFIG
    if saved.exists():
        # over today's schema, so that a run saved before a section always existed compares by its values
        old = OmegaConf.create(as_dict(restore(OmegaConf.to_container(OmegaConf.load(saved)))))
        for name, section in (("model", model), ("data", data)):
            if OmegaConf.to_container(old[name]) != as_dict(section):
                raise UserError(
                    f"train.resume: the {name} config differs from the run being resumed "
                    f"({saved}); resume with the same {name} settings"
                )
        # What trains must stay what trained: a checkpoint of one method does not fit another's model.
        now = as_dict(train)
        for key in ("finetune", "lora", "finetune_layers"):
            if key in old.train and OmegaConf.to_container(old.train)[key] != now[key]:
                raise UserError(
                    f"train.resume: train.{key} differs from the run being resumed ({saved}); "
                    f"resume with the same train.{key}"
                )
    return target, ckpt


@dataclass
class Resume:
    """Where a resumed run picks up: what its checkpoint's marker holds."""

    checkpoint: Path
    step: int
    wandb_id: str | None = None
    running_loss: dict = field(default_factory=dict)  # {"sum": float, "micro_steps": int}


def read_marker(ckpt: Path) -> Resume:
    marker = json.loads((ckpt / COMPLETE).read_text())
    return Resume(ckpt, marker["step"], marker.get("wandb_id"), marker.get("running_loss", {}))


def write_marker(ckpt: Path, step: int, wandb_id: str | None, loss_sum: float, micro_steps: int) -> None:
    """Mark a checkpoint complete (atomically), with the run's own state at its step."""
    # the training loss summed since the last evaluation, so that a resumed run's train/running_loss
    # equals an uninterrupted one's
    marker = {"step": step, "wandb_id": wandb_id, "running_loss": {"sum": loss_sum, "micro_steps": micro_steps}}
    write_text_atomic(ckpt / COMPLETE, json.dumps(marker))
