"""Decoding: the logits transforms (temperature, top-k, top-p), the settings, and the loops that use them.

One implementation of each transform serves every model. The rooms:
- settings.py    DecodingConfig (the schema of conf/decoding/), its checks, the strategy of a setting
- results.py     Generation and Step: what decoding returns, with its trace
- transforms.py  temperature, top-k, top-p as pure functions of [batch, vocab] scores
- cache.py       a preallocated key/value cache
- steps.py       "the next-token logits given the tokens so far": over a model's own cache, or a window
- loop.py        greedy decoding and sampling
- beam.py        beam search (a port of transformers')
- hf.py          transformers' `generate` with gptfit's transforms, for every other causal LM
- decode.py      `generate`, which picks the path, and `generate_each`, many settings at once

The names below are read lazily (PEP 562), so that `gptfit.config` can take `DecodingConfig` from
settings.py and report a bad config before torch and transformers are imported.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "DecodingConfig": "settings",
    "STRATEGIES": "settings",
    "as_setting": "settings",
    "strategy_of": "settings",
    "apply_temperature": "transforms",
    "top_k_filter": "transforms",
    "top_p_filter": "transforms",
    "transform": "transforms",
    "KVCache": "cache",
    "Generation": "results",
    "Step": "results",
    "TransformProcessor": "hf",
    "IMPOSSIBLE": "beam",
    "generate": "decode",
    "generate_each": "decode",
    "model_context": "decode",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
