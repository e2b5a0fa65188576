"""Decoding through transformers' `generate`, for causal LMs that bring no decode step of their own.

gptfit's transforms are plugged in as the only `LogitsProcessor`, with the library's own warpers
turned off (top_k=0, top_p=1, temperature=1), so that a setting means the same for every model.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from gptfit.core.eval_mode import eval_mode
from gptfit.core.sampling.loop import top_candidates
from gptfit.core.sampling.results import Generation, Step
from gptfit.core.sampling.transforms import transform


class TransformProcessor(LogitsProcessor):
    """`transform` as a transformers `LogitsProcessor`, so that `generate` uses gptfit's transforms."""

    def __init__(self, setting: Any, min_tokens_to_keep: int = 1):
        self.setting, self.min_tokens_to_keep = setting, min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return transform(scores, self.setting, self.min_tokens_to_keep)


def via_generate(model, input_ids, attention_mask, s, eos, min_new, trace, top_n, meta) -> Generation:
    """transformers' `generate` with gptfit's transforms as the only warpers."""
    strategy = meta["strategy"]
    beams = strategy in ("beam", "beam_sample")
    sampling = strategy in ("sample", "beam_sample")
    processors = LogitsProcessorList()
    if sampling:
        min_keep = (len(eos) + 1 if eos is not None else 2) if beams else 1
        processors.append(TransformProcessor(s, min_keep))
    eos_ids = eos.tolist() if eos is not None else None
    pad = eos_ids[0] if eos_ids else getattr(model.config, "pad_token_id", None) or 0
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)  # said outright, so generate need not guess it
    # Keyword arguments, not a GenerationConfig: only these override the model's defaults with None.
    options = dict(
        max_new_tokens=s.max_new_tokens,
        min_new_tokens=min_new,
        do_sample=sampling,
        num_beams=s.num_beams if beams else 1,
        length_penalty=s.length_penalty,
        early_stopping=bool(s.early_stopping),
        num_return_sequences=s.num_return_sequences if beams else 1,
        eos_token_id=eos_ids,
        pad_token_id=pad,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        return_dict_in_generate=True,
        output_scores=trace or beams,
    )
    if sampling:
        # No library warper, whatever the model's generation_config says: gptfit's transforms are the only ones.
        options.update(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    device = input_ids.device
    devices = [device.index or 0] if device.type == "cuda" else []
    # Sampling in `generate` draws from the global RNG: fork it so that the caller's state is untouched.
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(meta["seed"])
        out = model.generate(input_ids, attention_mask=attention_mask, logits_processor=processors, **options)
    record = []
    if trace and not beams:
        prompt_len = meta["prompt_length"]
        for t, scores in enumerate(out.scores):
            record.append(Step(t, out.sequences[:, prompt_len + t].clone(), *top_candidates(scores, top_n)))
    scores = getattr(out, "sequences_scores", None) if beams else None
    return Generation(out.sequences, backend="generate", scores=scores, steps=record, **meta)
