"""Building the model and tokenizer of a run: gptfit's own GPT, a hub/local causal LM, or an earlier run's."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from gptfit.config import ModelConfig
from gptfit.core.sampling.decode import model_context
from gptfit.errors import UserError
from gptfit.files import BEST_MODEL, FINAL_MODEL
from gptfit.model.gpt import GPTConfig, GPTForCausalLM

__all__ = ["build_model", "load_model", "load_pretrained", "load_tokenizer", "model_context", "pretrained_path"]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def resolve_model_dir(path: str, key: str = "model.init_from") -> Path:
    """A saved model directory, or the final/best model inside a run directory (for the config `key`)."""
    p = Path(path).expanduser()
    if (p / "config.json").exists():
        return p
    for sub in (FINAL_MODEL, BEST_MODEL):
        if (p / sub / "config.json").exists():
            return p / sub
    raise UserError(
        f"{key}={path!r}: no saved model there (expected config.json, or final/ or best/ "
        "of a run directory); point it at a finished run"
    )


def load_tokenizer(path: str, trust_remote_code: bool = False):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(
            f"model {path!r}: could not load its tokenizer ({_first_line(e)}); give a hub name or a "
            "local model directory (set HF_HUB_OFFLINE=1 without a network)"
        ) from None
    if tokenizer.eos_token_id is None:
        raise UserError(f"model {path!r}: its tokenizer has no eos token to join documents with")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, trust_remote_code: bool = False, attn_implementation: str | None = None):
    kwargs = dict(trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(
            f"model {path!r}: could not load ({_first_line(e)}); give a hub name or a local model "
            "directory (set HF_HUB_OFFLINE=1 without a network)"
        ) from None
    except Exception as e:  # corrupt weights surface as safetensors or torch errors
        raise UserError(
            f"model {path!r}: could not load its weights ({_first_line(e)}); the files may be "
            "corrupt or incomplete, save the model again"
        ) from None


def load_pretrained(path: str, trust_remote_code: bool = False, attn_implementation: str | None = None):
    """(model, tokenizer) through the Auto classes, from the hub or a local directory."""
    return load_model(path, trust_remote_code, attn_implementation), load_tokenizer(path, trust_remote_code)


def pretrained_path(model: ModelConfig) -> str | None:
    """The model a run starts from (a hub name or directory), or None to train gptfit's GPT from scratch."""
    if model.kind == "hf":
        return model.name_or_path
    if model.kind == "base" and not model.init_from:
        raise UserError("model=base: the base model's folder was not found; run through python -m gptfit.train")
    if model.init_from:
        return str(resolve_model_dir(model.init_from))
    return None


def build_model(model: ModelConfig, tokenizer):
    """The model of a run: loaded when it starts from a pretrained one, else gptfit's GPT, fresh."""
    path = pretrained_path(model)
    if path is not None:
        return load_model(path, model.trust_remote_code)
    m = model
    config = GPTConfig(
        vocab_size=len(tokenizer),
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        block_size=m.block_size,
        dropout=m.dropout,
        bias=m.bias,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPTForCausalLM(config)
