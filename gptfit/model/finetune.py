"""The fine-tuning methods of `train.finetune`: what trains, and the plain model a run saves.

- `full`: every parameter (the model as built).
- `lora`: low-rank adapters (peft) beside the layers of the blocks; the model to train is a peft model,
  and what a run saves is the merged plain model (`plain_model`) plus the adapter (`save_adapter`).
- `top_layers`: the last `train.finetune_layers` blocks and the final norm; embeddings and the output
  layer frozen.
- `head`: the output layer alone, untied from the input embedding first (head-only tuning, as in
  Mireshghallah et al. 2022 and Kumar et al. 2022).

The model families are told apart by `config.model_type`: gptfit's GPT (`gptfit`, nn.Linear layers),
GPT-2 (`gpt2`, transformers' Conv1D, weights stored [in, out]) and GPT-NeoX (`gpt_neox`). Blocks and the
final norm are found by their usual attribute names under `model.base_model`, so `top_layers` and
`head` also work for other families that use them; LoRA on another family needs `train.lora.target_modules`.

The output layer never takes a LoRA: gptfit's GPT computes its training loss from `lm_head.weight`
directly (core.lm_loss), which would bypass an adapter on it; `head` is the way to tune it.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from torch import nn
from transformers.pytorch_utils import Conv1D

from gptfit.config.train import LoraConfig, TrainConfig
from gptfit.errors import UserError
from gptfit.files import atomic_folder

__all__ = [
    "apply_finetune",
    "count_parameters",
    "default_target_modules",
    "family_of",
    "is_lora",
    "plain_model",
    "save_adapter",
]

# The layers inside each family's blocks that a LoRA adapts by default: attention and MLP, all of them.
DEFAULT_TARGETS = {
    "gptfit": ["c_attn", "c_proj", "c_fc"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
# Where families keep their blocks and final norm, under `model.base_model` (gptfit and GPT-2: h and ln_f;
# GPT-NeoX: layers and final_layer_norm; Llama-like models: layers and norm).
BLOCK_NAMES = ("h", "layers", "blocks")
FINAL_NORM_NAMES = ("ln_f", "final_layer_norm", "norm")
ADAPTABLE = (nn.Linear, Conv1D)  # the layer kinds peft's LoRA wraps here (Conv1D with fan_in_fan_out)


def family_of(model) -> str:
    """The model's family: its `config.model_type` (`gptfit`, `gpt2`, `gpt_neox`, ...)."""
    return str(getattr(model.config, "model_type", "") or type(model).__name__)


def default_target_modules(model) -> list[str]:
    """The layers a LoRA adapts when `train.lora.target_modules` is null: the family's, or a UserError."""
    family = family_of(model)
    if family not in DEFAULT_TARGETS:
        raise UserError(
            f"train.lora.target_modules=null: no default for a {family!r} model; name its layers, one of "
            f"{', '.join(adaptable_layers(model)) or '(none found)'}"
        )
    return list(DEFAULT_TARGETS[family])


def _part(model, names: tuple[str, ...], kind: type, what: str, method: str) -> nn.Module:
    """The first of `names` under `model.base_model` that is a `kind`; UserError naming `what` otherwise."""
    for name in names:
        found = getattr(model.base_model, name, None)
        if isinstance(found, kind):
            return found
    raise UserError(
        f"train.finetune{method}: cannot find the {what} of a {family_of(model)!r} model (looked for "
        f"{', '.join(names)}); use train.finetune=full or lora"
    )


def blocks_of(model) -> nn.ModuleList:
    """The model's list of transformer blocks."""
    return _part(model, BLOCK_NAMES, nn.ModuleList, "blocks", "")


def final_norm_of(model) -> nn.Module:
    return _part(model, FINAL_NORM_NAMES, nn.Module, "final norm", "=top_layers")


def adaptable_layers(model) -> list[str]:
    """The names (last part) of the Linear / Conv1D layers inside the blocks, sorted: what a LoRA may target."""
    return sorted({name.rsplit(".", 1)[-1] for name in _adaptable(model)})


def _adaptable(model) -> list[str]:
    """The full names, within the blocks, of the Linear / Conv1D layers (`0.attn.c_attn`, ...)."""
    return [name for name, m in blocks_of(model).named_modules() if isinstance(m, ADAPTABLE)]


def _names(full: str, target: str) -> bool:
    """Whether a target names a layer, as peft matches them: the whole name or its dotted end."""
    return full == target or full.endswith("." + target)


def target_modules(model, lora: LoraConfig) -> list[str]:
    """`train.lora.target_modules`, or the family's default, each checked to name a layer of the blocks."""
    chosen = list(lora.target_modules) if lora.target_modules is not None else default_target_modules(model)
    layers = _adaptable(model)
    unknown = [t for t in chosen if not any(_names(full, t) for full in layers)]
    if unknown:
        output = model.get_output_embeddings()
        heads = {n for n, m in model.named_modules() if output is not None and m is output}
        why = (
            "the output layer takes no LoRA (gptfit's fused loss reads its weight directly; tune it with "
            "train.finetune=head);"
            if any(_names(h, t) for h in heads for t in unknown)
            else "not a Linear or Conv1D layer of this model's blocks;"
        )
        raise UserError(
            f"train.lora.target_modules={chosen}: {', '.join(unknown)}: {why} choose from "
            f"{', '.join(adaptable_layers(model))}"
        )
    return chosen


def apply_finetune(model, train: TrainConfig):
    """The model to train under `train.finetune`: for lora a peft model around `model`; otherwise `model`
    itself, with `requires_grad` set (and, for head, its output layer untied)."""
    if train.finetune == "lora":
        return apply_lora(model, train.lora)
    if train.finetune == "top_layers":
        return train_top_layers(model, train.finetune_layers)
    if train.finetune == "head":
        return train_head(model)
    return model


def apply_lora(model, lora: LoraConfig):
    """A peft model whose only trainable parameters are the adapters of `target_modules` (B starts at 0,
    so the model computes what it did before training)."""
    import peft  # only a LoRA run needs it

    targets = target_modules(model, lora)
    targeted = [m for n, m in blocks_of(model).named_modules() if any(_names(n, t) for t in targets)]
    conv1d = any(isinstance(m, Conv1D) for m in targeted)
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        fan_in_fan_out=conv1d,  # Conv1D stores its weight [in, out]: peft transposes the update
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft 0.21 asks transformers 5 a deprecated question; nothing for a user to act on
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return peft.get_peft_model(model, config)


def train_top_layers(model, n: int):
    """Only the last `n` blocks and the final norm train."""
    blocks = blocks_of(model)
    if n > len(blocks):
        raise UserError(
            f"train.finetune_layers={n}: the model has {len(blocks)} blocks; set it to at most {len(blocks)} "
            "(or train.finetune=full)"
        )
    model.requires_grad_(False)
    for block in blocks[len(blocks) - n :]:
        block.requires_grad_(True)
    final_norm_of(model).requires_grad_(True)
    return model


def train_head(model):
    """Only the output layer trains, untied from the input embedding."""
    output = model.get_output_embeddings()
    if output is None:
        raise UserError(f"train.finetune=head: a {family_of(model)!r} model has no output layer to tune")
    untie_output_layer(model)
    model.requires_grad_(False)
    output.requires_grad_(True)
    return model


def untie_output_layer(model) -> bool:
    """Give the output layer a weight of its own if it shares the input embedding's; True if it did.

    config.tie_word_embeddings=False makes the untying last: `save_pretrained` writes both weights and
    `from_pretrained` no longer ties them."""
    output, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    tied = output.weight is embedding.weight
    if tied:
        output.weight = nn.Parameter(embedding.weight.detach().clone())  # [vocab, n_embd], a copy
    model.config.tie_word_embeddings = False
    # transformers keeps the tied names it found at init; re-read them so that no later tie_weights() re-ties.
    if hasattr(model, "all_tied_weights_keys"):
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    return tied


def is_lora(model) -> bool:
    """Whether `model` is a peft model (train.finetune=lora)."""
    return callable(getattr(model, "merge_and_unload", None)) and hasattr(model, "peft_config")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total): the parameters that train, and all of the model's without adapters; a tensor
    shared by two layers (tied embeddings) counts once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    return trainable, total


def plain_model(model):
    """The model to save in final/ and best/: a plain transformers model that loads without peft.

    For a LoRA run, the adapters merged into a deep copy: merging the training model in place would
    change what trains next (and what a checkpoint of it holds); the copy costs one model's memory while
    it is saved. Any other model is returned as it is."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def save_adapter(model, folder: Path) -> None:
    """Write a LoRA run's adapter (adapter_config.json, adapter_model.safetensors) into `folder`, swapped in
    whole, so a kill never leaves half an adapter."""
    with atomic_folder(Path(folder)) as tmp:
        model.save_pretrained(tmp)
