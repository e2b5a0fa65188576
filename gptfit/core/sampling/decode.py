"""`generate`: decode one setting from a batch of prompts, with whichever path serves the model.

- A model with a decode step of its own (`steps.decodes_with_cache`: gptfit's GPT) is decoded by
  gptfit's loops over a preallocated `KVCache`, with no `generate` machinery around them; beams move
  only the cache rows they must.
- Any other causal LM goes through transformers' `model.generate` with gptfit's transforms (hf.py).
  Two cases take gptfit's loops without a cache instead: a beam-search trace (generate does not show
  its running beams) and decoding past the model's context (generate would fail).

Sampling draws from a `torch.Generator` seeded by `seed` for each call (for `generate` the global RNG is
forked and restored), so decoding never moves the RNG state that training depends on.

The model's context: when prompt + new tokens would pass it, the window slides. The next token is then
predicted from the last `context` tokens only (the prompt included), exactly as a model without a cache
would do it on `tokens[:, -context:]`. The cached path recomputes its cache from that window (one full
window forward per step once the context is full). A prompt longer than the context is cut the same way.
Nothing ever raises for length.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from gptfit.core.decoding_settings import as_setting, strategy_of
from gptfit.core.eval_mode import eval_mode
from gptfit.core.sampling.beam import beam_search
from gptfit.core.sampling.hf import via_generate
from gptfit.core.sampling.loop import Block, one_at_a_time
from gptfit.core.sampling.results import Generation
from gptfit.core.sampling.steps import CachedSteps, WindowSteps, decodes_with_cache
from gptfit.errors import UserError


def model_context(model) -> int | None:
    """The most positions a model can take, from the standard names of its config (None: no limit known)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "block_size"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _eos_tensor(model, eos_token_id, device) -> torch.Tensor | None:
    if eos_token_id is None:
        eos_token_id = getattr(model.config, "eos_token_id", None)
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


@contextlib.contextmanager
def _small_step_kernels(model, device: torch.device):
    """Decoding runs many tiny steps. On CPU, oneDNN's GELU (what torch picks) costs about 8 us a call
    whatever the size, against 2 us for torch's own kernel at one token; greedy decoding at batch 1
    loses 15% to it. Decoding of fp32 models therefore runs with oneDNN switched off (bf16 matmuls
    need it, so other dtypes keep it)."""
    fp32 = next(model.parameters()).dtype == torch.float32
    if device.type != "cpu" or not fp32:
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _prepared(model, input_ids, attention_mask, eos_token_id):
    """(device, input_ids, attention_mask, eos) on the model's device; a mask without padding is None."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise UserError(
            f"generate: input_ids must be [batch, prompt] with a prompt of at least one token, "
            f"got shape {tuple(input_ids.shape)}"
        )
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        if bool(attention_mask.all()):
            attention_mask = None  # nothing is padded: take the unmasked (fast) attention
    return device, input_ids, attention_mask, _eos_tensor(model, eos_token_id, device)


def generate(
    model,
    input_ids: torch.LongTensor,  # [batch, prompt]
    setting: Any = None,
    *,
    attention_mask: torch.Tensor | None = None,  # [batch, prompt], 0 = left padding
    seed: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    min_new_tokens: int = 0,
    trace: bool = False,
    trace_top: int = 5,
    use_cache: bool = True,
) -> Generation:
    """Decode `setting` (a DecodingConfig, dict or DictConfig) from `input_ids`.

    eos_token_id: None takes the model config's; [] never stops early. A row that ends is padded with
    end-of-text until every row has ended. min_new_tokens: end-of-text is impossible before that many.
    trace: keep each step's top `trace_top` candidates (and, for beam search, the beams).
    use_cache=False decodes with gptfit's loop, without a cache, whatever the model (slow: a reference).
    Returns a `Generation`; `backend` says which path ran.
    """
    s = as_setting(setting)
    strategy = strategy_of(s)
    device, input_ids, attention_mask, eos = _prepared(model, input_ids, attention_mask, eos_token_id)
    meta = dict(strategy=strategy, setting=dataclasses.asdict(s), seed=seed, prompt_length=input_ids.shape[1])

    beams = strategy in ("beam", "beam_sample")
    if not beams and s.num_return_sequences > 1:
        # Sampled (or, at temperature 0, greedy) sequences of one prompt sit next to each other.
        input_ids = input_ids.repeat_interleave(s.num_return_sequences, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(s.num_return_sequences, dim=0)

    context = model_context(model)
    too_long = context is not None and input_ids.shape[1] + s.max_new_tokens > context
    cached = use_cache and decodes_with_cache(model) and context is not None
    if not cached and use_cache and not too_long and not (trace and beams):
        return via_generate(model, input_ids, attention_mask, s, eos, min_new_tokens, trace, trace_top, meta)

    rows = input_ids.shape[0] * (s.num_beams if beams else 1)
    gen = torch.Generator(device=device).manual_seed(seed)
    with eval_mode(model), torch.inference_mode(), _small_step_kernels(model, device):
        if cached:
            backend, steps = "cached", CachedSteps(model, context, rows, input_ids.shape[1] + s.max_new_tokens)
        else:
            backend, steps = "window", WindowSteps(model, context)
        if beams:
            seqs, scores, record = beam_search(
                steps,
                input_ids,
                attention_mask,
                s,
                strategy == "beam_sample",
                gen,
                eos,
                min_new_tokens,
                trace,
                trace_top,
            )
        else:
            block = Block(slice(None), s, strategy == "sample", gen)
            seqs, record = one_at_a_time(
                steps, input_ids, attention_mask, [block], s.max_new_tokens, eos, min_new_tokens, trace, trace_top
            )
            scores = None
    return Generation(seqs, backend=backend, scores=scores, steps=record, **meta)


def generate_each(
    model,
    input_ids: torch.LongTensor,  # [batch, prompt]
    settings: dict[str, Any],
    *,
    attention_mask: torch.Tensor | None = None,  # [batch, prompt], 0 = left padding
    seed: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    rows_at_once: int | None = None,
) -> dict[str, Generation]:
    """{name: `generate(model, input_ids, setting, ...)`} for every setting, from the same prompts.

    On a model that decodes over its own cache, the greedy and sampled settings with the same
    max_new_tokens decode as blocks of rows of one batch (of at most `rows_at_once` rows where the
    settings allow; None: all of them): one forward pass a step serves them all, and each block draws
    from its own generator seeded by `seed`, as it would alone. Each setting's sequences end where its
    own rows have all ended. So the tokens are those of `generate`, as long as a row's logits do not
    depend on the rows beside it (true of gptfit's CPU kernels, tested; GPU kernels chosen by shape may
    round differently). Beam search, and other models, decode one setting at a time. No min_new_tokens
    or trace here: `generate` has them.
    """
    parsed = {name: as_setting(setting, name=f"decoding.{name}") for name, setting in settings.items()}
    shared = decodes_with_cache(model) and model_context(model) is not None
    out = {}
    for batch in _batches(parsed, input_ids.shape[0], rows_at_once) if shared else []:
        out.update(_decode_blocks(model, input_ids, attention_mask, batch, seed, eos_token_id))
    for name, s in parsed.items():
        if name not in out:
            out[name] = generate(
                model, input_ids, s, attention_mask=attention_mask, seed=seed, eos_token_id=eos_token_id
            )
    return {name: out[name] for name in parsed}


def _batches(settings: dict, prompts: int, rows_at_once: int | None) -> list[dict]:
    """The greedy and sampled settings in batches to decode together: one max_new_tokens a batch, at
    most `rows_at_once` rows (a setting with more goes alone)."""
    by_length: dict[int, list[tuple[int, dict]]] = {}  # max_new_tokens: [(rows, {name: setting})]
    for name, s in settings.items():
        if strategy_of(s) not in ("greedy", "sample"):
            continue
        rows = prompts * s.num_return_sequences
        batches = by_length.setdefault(s.max_new_tokens, [])
        if not batches or (rows_at_once is not None and batches[-1][0] + rows > rows_at_once):
            batches.append((0, {}))
        held, batch = batches[-1]
        batch[name] = s
        batches[-1] = (held + rows, batch)
    return [batch for batches in by_length.values() for _, batch in batches]


def _decode_blocks(model, input_ids, attention_mask, settings: dict, seed: int, eos_token_id) -> dict[str, Generation]:
    """Greedy and sampled settings of one max_new_tokens, each a block of rows of one cached decode."""
    device, input_ids, attention_mask, eos = _prepared(model, input_ids, attention_mask, eos_token_id)
    prompts, masks, blocks, start = [], [], [], 0
    for s in settings.values():
        # A setting's sequences of one prompt sit next to each other, as in `generate`.
        prompts.append(input_ids.repeat_interleave(s.num_return_sequences, dim=0))
        if attention_mask is not None:
            masks.append(attention_mask.repeat_interleave(s.num_return_sequences, dim=0))
        rows = slice(start, start + len(prompts[-1]))
        start = rows.stop
        blocks.append(Block(rows, s, strategy_of(s) == "sample", torch.Generator(device=device).manual_seed(seed)))
    prompt = torch.cat(prompts)  # [rows, prompt]
    mask = torch.cat(masks) if masks else None  # [rows, prompt]
    max_new = next(iter(settings.values())).max_new_tokens
    with eval_mode(model), torch.inference_mode(), _small_step_kernels(model, device):
        steps = CachedSteps(model, model_context(model), len(prompt), prompt.shape[1] + max_new)
        seqs, _ = one_at_a_time(steps, prompt, mask, blocks, max_new, eos, 0, False, 0)  # [rows, prompt + new]
    length = input_ids.shape[1]
    return {
        name: Generation(
            _until_all_ended(seqs[block.rows], length, eos),
            prompt_length=length,
            strategy=strategy_of(s),
            backend="cached",
            setting=dataclasses.asdict(s),
            seed=seed,
        )
        for (name, s), block in zip(settings.items(), blocks)
    }


def _until_all_ended(seqs: torch.Tensor, prompt_length: int, eos: torch.Tensor | None) -> torch.Tensor:
    """`seqs` cut after the step at which its last row ended (where a decode of these rows alone stops)."""
    if eos is None or len(seqs) == 0:
        return seqs
    ended = torch.isin(seqs[:, prompt_length:], eos)  # [rows, new]
    if not bool(ended.any(1).all()):
        return seqs  # a row never ended
    last = int(ended.int().argmax(1).max())  # the latest first end-of-text
    return seqs[:, : prompt_length + last + 1]
