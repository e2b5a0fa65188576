"""Decoding: the logits transforms (temperature, top-k, top-p) and the loops that use them.

One implementation of each transform serves every model. A setting's schema and strategy live beside this
package, in gptfit/core/decoding_settings.py (pure Python, so that a config is checked before torch loads).
The rooms:
- results.py     Generation and Step: what decoding returns, with its trace
- transforms.py  temperature, top-k, top-p as pure functions of [batch, vocab] scores
- cache.py       a preallocated key/value cache
- steps.py       "the next-token logits given the tokens so far": over a model's own cache, or a window
- loop.py        greedy decoding and sampling
- beam.py        beam search (a port of transformers')
- hf.py          transformers' `generate` with gptfit's transforms, for every other causal LM
- decode.py      `generate`, which picks the path, and `generate_each`, many settings at once
"""

from gptfit.core.decoding_settings import STRATEGIES, DecodingConfig, as_setting, strategy_of
from gptfit.core.sampling.beam import IMPOSSIBLE
from gptfit.core.sampling.cache import KVCache
from gptfit.core.sampling.decode import generate, generate_each, model_context
from gptfit.core.sampling.hf import TransformProcessor
from gptfit.core.sampling.results import Generation, Step
from gptfit.core.sampling.transforms import apply_temperature, top_k_filter, top_p_filter, transform

__all__ = [
    "IMPOSSIBLE",
    "STRATEGIES",
    "DecodingConfig",
    "Generation",
    "KVCache",
    "Step",
    "TransformProcessor",
    "apply_temperature",
    "as_setting",
    "generate",
    "generate_each",
    "model_context",
    "strategy_of",
    "top_k_filter",
    "top_p_filter",
    "transform",
]
