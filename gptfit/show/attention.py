"""What `python -m gptfit.attend` shows of a trained run: its attention on a prompt, as three figures."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from gptfit.core.attention import attention_maps
from gptfit.core.sampling.decode import model_context
from gptfit.errors import UserError
from gptfit.model.loading import load_pretrained
from gptfit.plots.attention import save_all


def prompt_ids(tokenizer, prompt: str, context: int | None) -> list[int]:
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    if not ids:
        raise UserError(f"prompt={prompt!r}: the tokenizer makes no token of it")
    if context is not None and len(ids) > context:
        raise UserError(f"prompt: {len(ids)} tokens, longer than the model's context of {context}; shorten it")
    return ids


def draw_run_attention(options, directory: Path) -> list[Path]:
    """The heatmaps, the line diagram of `options.layer` / `options.head` and the per-head summary."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, tokenizer = load_pretrained(str(directory), attn_implementation="eager")
    ids = prompt_ids(tokenizer, options.prompt, model_context(model))
    maps = attention_maps(model, torch.tensor(ids))  # [layer, head, query, key]
    L, H = maps.shape[:2]
    if options.layer >= L:
        raise UserError(f"layer={options.layer}: the model has layers 0..{L - 1}")
    if options.head is not None and options.head >= H:
        raise UserError(f"head={options.head}: the model has heads 0..{H - 1} (or head=null for the mean)")
    labels = [repr(tokenizer.decode([t]))[1:-1].replace(" ", "\u2423") for t in ids]
    out = Path(options.out).expanduser() if options.out else Path(options.run).expanduser() / "attention"
    return save_all(maps, labels, ids, out, options.layer, options.head)
