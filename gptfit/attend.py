"""`python -m gptfit.attend run=<run dir> prompt="..." layer=0 head=1`: draw the attention of a trained run.

Arguments are key=value pairs:
  run=DIR          a run directory (its final/ model, or best/ with model=best) or a saved model directory
  prompt="..."     the text whose attention is drawn (default: "My friend was right about this class.
                   It is so fun!")
  layer=N          the layer of the line diagram (default 0)
  head=N|mean      its head, or the mean over heads (default mean)
  out=DIR          where the figures go (default <run>/attention)
  model=final|best which saved model of the run

Writes attention_heatmaps.png (layers x heads), attention_lines.png (each token linked to the earlier
tokens it attends to) and attention_heads.png (entropy and copying score per head), and prints where.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from gptfit.cli import fail
from gptfit.errors import UserError
from gptfit.sample import _int, model_dir

DEFAULT_PROMPT = "My friend was right about this class. It is so fun!"
OPTIONS = {"run": None, "prompt": DEFAULT_PROMPT, "layer": "0", "head": "mean", "out": None, "model": "final"}


def parse_args(argv: list[str]) -> dict:
    options = dict(OPTIONS)
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in OPTIONS:
            raise UserError(f"{arg!r}: expected key=value with a key among {', '.join(OPTIONS)}")
        options[key] = value
    if not options["run"]:
        raise UserError("run=<run dir> is required: the run (or saved model) whose attention to draw")
    if not options["prompt"].strip():
        raise UserError("prompt is empty: give the text whose attention to draw")
    if options["model"] not in ("final", "best"):
        raise UserError(f"model={options['model']!r}: one of final, best")
    options["layer"] = _int("layer", options["layer"], 0)
    options["head"] = None if options["head"] == "mean" else _int("head", options["head"], 0)
    return options


def prompt_ids(tokenizer, prompt: str, context: Optional[int]) -> list[int]:
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    if not ids:
        raise UserError(f"prompt={prompt!r}: the tokenizer makes no token of it")
    if context is not None and len(ids) > context:
        raise UserError(f"prompt: {len(ids)} tokens, longer than the model's context of {context}; shorten it")
    return ids


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        options = parse_args(argv)
        directory = model_dir(options["run"], options["model"])
        import torch
        from transformers.utils import logging as hf_logging

        from gptfit.plots.attention import save_all
        from gptfit.core.attention import attention_maps
        from gptfit.model.loading import load_pretrained, model_context

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        model, tokenizer = load_pretrained(str(directory), attn_implementation="eager")
        ids = prompt_ids(tokenizer, options["prompt"], model_context(model))
        maps = attention_maps(model, torch.tensor(ids))
        L, H = maps.shape[:2]
        if options["layer"] >= L:
            raise UserError(f"layer={options['layer']}: the model has layers 0..{L - 1}")
        if options["head"] is not None and options["head"] >= H:
            raise UserError(f"head={options['head']}: the model has heads 0..{H - 1} (or head=mean)")
        labels = [repr(tokenizer.decode([t]))[1:-1].replace(" ", "\u2423") for t in ids]
        out = Path(options["out"]).expanduser() if options["out"] else Path(options["run"]).expanduser() / "attention"
        for path in save_all(maps, labels, ids, out, options["layer"], options["head"]):
            print(f"figure: {path}")
    except UserError as e:
        fail([str(e)])


if __name__ == "__main__":
    main()
