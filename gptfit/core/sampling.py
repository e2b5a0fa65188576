"""Decoding: the logits transforms (temperature, top-k, top-p) and the loops that use them.

One implementation of each transform serves every model:
- gptfit's own GPT is decoded by gptfit's loop over a preallocated `KVCache` (the fast path: no
  `generate` machinery; one token per step through `_LeanGPT`, the model's forward without nn.Module
  dispatch, checked bit for bit against the model; beams move only the cache rows they must);
- any other causal LM goes through transformers' `model.generate`, with the same transforms plugged in
  as `LogitsProcessor`s and the library's own warpers turned off (top_k=0, top_p=1, temperature=1).
  Two cases fall back to gptfit's loop without a cache: a beam-search trace (generate does not show
  its running beams) and decoding past the model's context (generate would fail).

The semantics are transformers' (checked against generation/logits_process.py and generation/utils.py):
temperature -> top-k -> top-p in that order, in float32; beam score = sum of log-probs /
(new tokens ** length_penalty); beam search is a port of `GenerationMixin._beam_search`, so it picks the
same tokens. `temperature == 0` means greedy.

Sampling draws from a `torch.Generator` seeded by `seed` for each call (for `generate` the global RNG is
forked and restored), so decoding never moves the RNG state that training depends on.

The model's context: when prompt + new tokens would pass it, the window slides. The next token is then
predicted from the last `context` tokens only (the prompt included), exactly as a model without a cache
would do it on `tokens[:, -context:]`. gptfit's loop recomputes its cache from that window (one full
window forward per step once the context is full); other models are decoded by gptfit's loop without a
cache. A prompt longer than the context is cut the same way. Nothing ever raises for length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

from gptfit.core.attention import fast_attention
from gptfit.errors import UserError

# transformers' "impossible" beam score. Used the same way (added, never assigned) so that the
# float32 rounding, and hence the tie-breaking of topk, is the same as in `generate`.
IMPOSSIBLE = -1.0e9

STRATEGIES = ("greedy", "sample", "beam", "beam_sample")


# ----------------------------------------------------------------------------------------------------
# Logits transforms: pure functions of [batch, vocab] scores, computed in float32.


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scores / temperature: < 1 sharpens the distribution, > 1 flattens it (0 is greedy: no division)."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: must be > 0 here (0 means greedy, see `generate`)")
    return logits.float() / float(temperature)


def top_k_filter(
    logits: torch.Tensor,  # [batch, vocab]
    top_k: int,
    min_tokens_to_keep: int = 1,
    filter_value: float = -math.inf,
) -> torch.Tensor:
    """Keep every token whose score is >= the k-th largest (ties at the boundary survive); 0 = off."""
    logits = logits.float()
    if top_k <= 0:
        return logits
    k = min(max(top_k, min_tokens_to_keep), logits.shape[-1])
    kth = torch.topk(logits, k).values[..., -1:]  # [batch, 1]
    return logits.masked_fill(logits < kth, filter_value)


def top_p_filter(
    logits: torch.Tensor,  # [batch, vocab]
    top_p: float,
    min_tokens_to_keep: int = 1,
    filter_value: float = -math.inf,
) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose mass reaches top_p; 1.0 = off."""
    logits = logits.float()
    if top_p >= 1.0:
        return logits
    ascending, order = torch.sort(logits, descending=False)  # [batch, vocab]
    mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)
    # A token goes when the tokens up to and including it hold no more than 1 - top_p of the mass.
    drop_sorted = mass_below <= (1 - top_p)
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, filter_value)


def transform(logits: torch.Tensor, setting: Any, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """A setting's transforms in transformers' order: temperature, then top-k, then top-p."""
    scores = logits.float()
    if setting.temperature != 1.0:
        scores = apply_temperature(scores, setting.temperature)
    scores = top_k_filter(scores, setting.top_k, min_tokens_to_keep)
    return top_p_filter(scores, setting.top_p, min_tokens_to_keep)


class TransformProcessor(LogitsProcessor):
    """`transform` as a transformers `LogitsProcessor`, so that `generate` uses gptfit's transforms."""

    def __init__(self, setting: Any, min_tokens_to_keep: int = 1):
        self.setting, self.min_tokens_to_keep = setting, min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return transform(scores, self.setting, self.min_tokens_to_keep)


# ----------------------------------------------------------------------------------------------------
# Settings


def as_setting(setting: Any = None, name: str = "decoding", **overrides):
    """A checked `DecodingConfig` from a DecodingConfig, a dict, a DictConfig or None (the defaults).

    Raises UserError naming `name.key` for an unknown key, a wrong type or a value out of range.
    """
    from gptfit.config import DecodingConfig, decoding_problems

    if setting is None:
        values = {}
    elif dataclasses.is_dataclass(setting):
        values = dataclasses.asdict(setting)
    else:
        values = {k: setting[k] for k in setting.keys()}
    values.update(overrides)
    kinds = {"bool": bool, "int": int, "float": float}
    fields = {f.name: kinds.get(str(f.type)) for f in dataclasses.fields(DecodingConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{name}.{unknown[0]}: unknown key; known keys: {', '.join(sorted(fields))}")
    for key, value in values.items():
        kind = fields[key]
        # bool is an int to Python; a float field takes an int (YAML writes `2` for 2.0), nothing else mixes.
        if kind is None:
            continue  # a field of another type: left to decoding_problems
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
        if not ok:
            raise UserError(f"{name}.{key}={value!r}: must be {'an integer' if kind is int else 'a ' + kind.__name__}")
        values[key] = kind(value)
    s = DecodingConfig(**values)
    problems = decoding_problems(s, name)
    if problems:
        raise UserError("; ".join(problems))
    return s


def strategy_of(setting: Any) -> str:
    """greedy, sample, beam or beam_sample (temperature 0 turns sampling into its greedy counterpart)."""
    sampling = bool(setting.do_sample) and setting.temperature > 0
    if setting.num_beams > 1:
        return "beam_sample" if sampling else "beam"
    return "sample" if sampling else "greedy"


# ----------------------------------------------------------------------------------------------------
# Results


@dataclass
class Step:
    """One decoding step of a trace. Rows are the sequences decoded side by side."""

    index: int  # which new token: 0 is the first after the prompt
    token_ids: torch.Tensor  # [rows] the token each row took; beam search: [batch, beams], the new beams
    top_ids: torch.Tensor  # [rows, n] the most probable next tokens (beam search: of each previous beam)
    top_probs: torch.Tensor  # [rows, n] their probabilities, after the setting's transforms
    parents: Optional[torch.Tensor] = None  # beam search: [batch, beams] the previous beam each beam extends
    scores: Optional[torch.Tensor] = None  # beam search: [batch, beams] each beam's sum of log-probs


@dataclass
class Generation:
    """What `generate` returns. Rows: batch * num_return_sequences, the sequences of one prompt adjacent."""

    sequences: torch.Tensor  # [rows, prompt + new] the prompt (left padding included), then the new tokens
    prompt_length: int
    strategy: str  # greedy | sample | beam | beam_sample
    backend: str  # cached (gptfit's loop) | window (gptfit's loop, no cache) | generate (transformers)
    setting: dict
    seed: int
    scores: Optional[torch.Tensor] = None  # beam search: [rows] the length-penalized score of each sequence
    steps: list[Step] = field(default_factory=list)  # filled when trace=True

    @property
    def new_tokens(self) -> torch.Tensor:  # [rows, new]
        return self.sequences[:, self.prompt_length :]


# ----------------------------------------------------------------------------------------------------
# Key/value cache


class KVCache:
    """Keys and values of every layer in one preallocated buffer: [layer, 2, batch, head, capacity, head_dim].

    `update` writes the new positions in place and returns views of everything so far, so a decoding
    step allocates nothing here (transformers' DynamicCache concatenates: it copies the whole cache at
    every step). One buffer also makes the beam reorder a single `index_select`, written into a spare
    buffer that then takes the first one's place (in place it would cost a second copy).
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, capacity: int,
                 dtype: torch.dtype = torch.float32, device: Union[str, torch.device, None] = None):
        self.buffer = torch.empty(n_layer, 2, batch, n_head, capacity, head_dim, dtype=dtype, device=device)
        self.spare: Optional[torch.Tensor] = None  # made on the first reorder
        self.lengths = [0] * n_layer
        self.capacity = capacity
        self._views()

    def _views(self) -> None:
        # Per layer: [batch, head, capacity, head_dim]. Indexed, not unbound: unbind's views refuse in-place writes.
        self.keys = [self.buffer[i, 0] for i in range(self.buffer.shape[0])]
        self.values = [self.buffer[i, 1] for i in range(self.buffer.shape[0])]

    @classmethod
    def for_model(cls, model, batch: int, capacity: int) -> "KVCache":
        c = model.config
        p = next(model.parameters())
        return cls(c.n_layer, batch, c.n_head, c.n_embd // c.n_head, capacity, p.dtype, p.device)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append [batch, head, time, head_dim] keys and values; return all of this layer's so far."""
        start = self.lengths[layer_idx]
        end = start + key.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KVCache holds {self.capacity} positions; {end} were asked for")
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k[:, :, start:end].copy_(key)
        v[:, :, start:end].copy_(value)
        self.lengths[layer_idx] = end
        return k[:, :, :end], v[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        """Row i becomes old row beam_idx[i] (beam search keeps the beams it extends)."""
        n = max(self.lengths)
        if self.buffer.requires_grad:
            self.buffer = self.buffer.index_select(2, beam_idx)  # autograd has no out= variant
        else:
            if self.spare is None:
                self.spare = torch.empty_like(self.buffer)
            torch.index_select(self.buffer[..., :n, :], 2, beam_idx, out=self.spare[..., :n, :])
            self.buffer, self.spare = self.spare, self.buffer
        self._views()

    reorder_cache = reorder  # transformers' name for the same operation

    def copy_row(self, src: int, dst: int) -> None:
        """Row dst takes row src's keys and values (a cheaper reorder when most rows stay, see _CachedSteps)."""
        n = max(self.lengths)
        self.buffer[:, :, dst, :, :n].copy_(self.buffer[:, :, src, :, :n])

    def reset(self) -> None:
        self.lengths = [0] * len(self.lengths)


# ----------------------------------------------------------------------------------------------------
# Steppers: "given the tokens so far, the next-token logits". The loops below do not know which one runs.


def _positions(mask: torch.Tensor) -> torch.LongTensor:
    """Position ids that skip left padding, as `generate` makes them: [rows, time]."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class _LeanGPT:
    """`GPTForCausalLM.forward` for decoding, as plain tensor operations on the model's own weights.

    A step of the `tiny` model is ~50 small ops; nn.Module dispatch around them costs as much as the ops
    themselves. This runs the same operations in the same order (attention is core.attention's
    `fast_attention`), so the logits are bit-for-bit the model's. `for_model` checks that on a probe
    and returns None when they differ (model.py changed and this mirror did not): decoding then goes
    through the modules, slower but never wrong. Eval mode only (no dropout), attention capture off.
    """

    _verdicts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> mirror in step?

    def __init__(self, model):
        t = model.transformer
        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.ln_f = (t.ln_f.normalized_shape, t.ln_f.weight, t.ln_f.bias, t.ln_f.eps)
        self.head = model.lm_head.weight
        self.n_head = model.config.n_head
        self.layers = [
            (b.attn.layer_idx,
             (b.ln_1.normalized_shape, b.ln_1.weight, b.ln_1.bias, b.ln_1.eps), b.attn.c_attn.weight,
             b.attn.c_attn.bias, b.attn.c_proj.weight, b.attn.c_proj.bias,
             (b.ln_2.normalized_shape, b.ln_2.weight, b.ln_2.bias, b.ln_2.eps), b.mlp.c_fc.weight, b.mlp.c_fc.bias,
             b.mlp.c_proj.weight, b.mlp.c_proj.bias)
            for b in t.h
        ]

    @classmethod
    def for_model(cls, model) -> Optional["_LeanGPT"]:
        from gptfit.model import GPTForCausalLM

        if type(model) is not GPTForCausalLM or model.training or any(b.attn.capture for b in model.transformer.h):
            return None
        lean = cls(model)
        if model not in cls._verdicts:
            probe = torch.arange(3, device=lean.wte.device)[None] % model.config.vocab_size  # [1, 3]
            a, b = KVCache.for_model(model, 1, 3), KVCache.for_model(model, 1, 3)
            same = True
            for ids in (probe[:, :2], probe[:, 2:]):  # a prefill, then a cached step
                mine = lean(ids, None, None, a)
                theirs = model(input_ids=ids, cache=b, logits_to_keep=1).logits[:, -1]
                same = same and torch.equal(mine, theirs)
            cls._verdicts[model] = same
        return lean if cls._verdicts[model] else None

    def __call__(self, ids, mask, positions, cache) -> torch.Tensor:
        B, T = ids.shape
        if positions is None:
            past = cache.get_seq_length()
            positions = torch.arange(past, past + T, device=ids.device).unsqueeze(0)
        key_padding = mask.bool() if mask is not None and not bool(mask.all()) else None
        x = F.embedding(ids, self.wte) + F.embedding(positions, self.wpe)  # [batch, time, n_embd]
        C = x.shape[-1]
        H = self.n_head
        for idx, ln_1, w_attn, b_attn, w_aproj, b_aproj, ln_2, w_fc, b_fc, w_mproj, b_mproj in self.layers:
            h = F.layer_norm(x, *ln_1)
            q, k, v = F.linear(h, w_attn, b_attn).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
            k, v = cache.update(k, v, idx)
            y = fast_attention(q, k, v, key_padding).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, w_aproj, b_aproj)
            h = F.gelu(F.linear(F.layer_norm(x, *ln_2), w_fc, b_fc))
            x = x + F.linear(h, w_mproj, b_mproj)
        x = F.layer_norm(x[:, -1:], *self.ln_f)
        return F.linear(x, self.head)[:, -1]  # [batch, vocab]


class _CachedSteps:
    """gptfit's GPT over a KVCache; at the context length the window slides and the cache is rebuilt.

    Beam search: a new beam extends an old one, so its cache must hold the old beam's history. Instead
    of moving every row of the cache (an index_select of all of it at each step: a quarter of beam
    search's time), a beam takes over its parent's cache row ("slot"); only a second child of the same
    parent copies it, into the slot of a beam that nobody extends. The model then runs on the rows in
    slot order, and the logits are put back in beam order.
    """

    def __init__(self, model, rows: int, total_length: int):
        self.model, self.context = model, model.config.block_size
        self.cache = KVCache.for_model(model, rows, min(self.context, total_length))
        self.next_position: Optional[torch.Tensor] = None  # [rows, 1] only with padding
        self.lean = _LeanGPT.for_model(model)
        self.slots: Optional[list[int]] = None  # cache row of each row; None: the same row
        self.order: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (row of each slot, slot of each row)

    def _forward(self, ids, mask, positions) -> torch.Tensor:
        if self.order is not None:
            row_of_slot, slot_of_row = self.order
            ids = ids[row_of_slot]
            mask = mask[row_of_slot] if mask is not None else None
            positions = positions[row_of_slot] if positions is not None else None
        if self.lean is not None:
            logits = self.lean(ids, mask, positions, self.cache)
        else:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache,
                             logits_to_keep=1)
            logits = out.logits[:, -1]  # [rows, vocab]
        return logits[self.order[1]] if self.order is not None else logits

    def prefill(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Fill the cache from the last `context` tokens ([rows, time]); the next-token logits."""
        self.cache.reset()
        self.slots = self.order = None
        window = tokens[:, -self.context :]
        positions = None
        if mask is not None:
            mask = mask[:, -self.context :]
            positions = _positions(mask)
            self.next_position = positions[:, -1:] + 1
        return self._forward(window, mask, positions)

    def step(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """tokens: [rows, time], the newest last. Only that one is run, unless the cache is full."""
        length = self.cache.get_seq_length() + 1
        if length > self.cache.capacity:
            return self.prefill(tokens, mask)
        positions = None
        if mask is not None:
            mask, positions = mask[:, -length:], self.next_position
            self.next_position = positions + 1
        return self._forward(tokens[:, -1:], mask, positions)

    def reorder(self, parents: torch.LongTensor) -> None:
        """Row i now extends old row parents[i]."""
        if self.next_position is not None:
            self.next_position = self.next_position.index_select(0, parents)
        n = len(parents)
        old = self.slots or list(range(n))
        wanted = [old[p] for p in parents.tolist()]
        slots, taken = [-1] * n, [False] * n
        for i, s in enumerate(wanted):  # the first child of a beam keeps its slot
            if not taken[s]:
                slots[i], taken[s] = s, True
        free = [s for s in range(n) if not taken[s]]
        for i, s in enumerate(wanted):  # the others copy it into a slot that no beam extends
            if slots[i] < 0:
                slots[i] = free.pop()
                self.cache.copy_row(s, slots[i])
        self.slots = slots
        if slots == list(range(n)):
            self.order = None
        else:
            slot_of_row = torch.tensor(slots, device=parents.device)
            self.order = (torch.argsort(slot_of_row), slot_of_row)


class _WindowSteps:
    """Any causal LM, no cache: every step runs the last `context` tokens (slow, but never too long)."""

    def __init__(self, model, context: Optional[int]):
        self.model, self.context = model, context
        params = inspect.signature(model.forward).parameters
        self.keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def prefill(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.context:
            tokens = tokens[:, -self.context :]
            mask = mask[:, -self.context :] if mask is not None else None
        extra = dict(attention_mask=mask, position_ids=_positions(mask)) if mask is not None else {}
        return self.model(input_ids=tokens, use_cache=False, **extra, **self.keep).logits[:, -1]

    step = prefill

    def reorder(self, rows: torch.LongTensor) -> None:
        pass  # the tokens carry everything


# ----------------------------------------------------------------------------------------------------
# Loops


def _top(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(scores.float(), dim=-1)
    values, ids = torch.topk(probs, min(n, probs.shape[-1]))
    return ids, values


def _one_at_a_time(steps, prompt, mask, s, sampling: bool, gen, eos, min_new: int, trace: bool, top_n: int):
    """Greedy or sampling, one token per row per step. Returns (sequences [rows, prompt + new], trace)."""
    rows, prompt_len = prompt.shape
    seqs = prompt.new_empty(rows, prompt_len + s.max_new_tokens)
    seqs[:, :prompt_len] = prompt
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(rows, s.max_new_tokens)], dim=1)
    alive = torch.ones(rows, dtype=torch.bool, device=prompt.device)
    record = []
    logits = steps.prefill(prompt, mask[:, :prompt_len] if mask is not None else None)
    end = prompt_len
    for t in range(s.max_new_tokens):
        scores = logits.float()  # [rows, vocab]
        if eos is not None and t < min_new:
            scores = scores.index_fill(1, eos, -math.inf)
        if sampling:
            scores = transform(scores, s)
            next_ids = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen).squeeze(1)
        else:
            next_ids = scores.argmax(dim=-1)
        if eos is not None:
            next_ids = torch.where(alive, next_ids, eos[0])  # a finished row is padded with end-of-text
        seqs[:, end] = next_ids
        end += 1
        if trace:
            record.append(Step(t, next_ids.clone(), *_top(scores, top_n)))
        if eos is not None:
            alive &= ~torch.isin(next_ids, eos)
            if not alive.any():
                break
        if t + 1 < s.max_new_tokens:
            logits = steps.step(seqs[:, :end], mask[:, :end] if mask is not None else None)
    return seqs[:, :end], record


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[b, idx[b, j], ...] for [batch, beams, ...] tensors (transformers' `_gather_beams`)."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def _beam_search(steps, prompt, mask, s, sampling: bool, gen, eos, min_new: int, trace: bool, top_n: int):
    """transformers' beam search (`_beam_search` and helpers), the same tensor operations in the same order.

    The running beams ([batch, beams]) extend one token per step; of all beams x vocab continuations the
    best 2 * beams (more with several eos ids) are kept, so that enough survive when some end. Those
    that end (eos or the last step) are scored sum log-probs / new_tokens ** length_penalty and compete
    for the `beams` finished slots. Returns (sequences, scores, trace).
    """
    batch, prompt_len = prompt.shape
    nb, lp, early = s.num_beams, s.length_penalty, bool(s.early_stopping)
    max_len = prompt_len + s.max_new_tokens
    dev = prompt.device
    keep = max(2, 1 + (len(eos) if eos is not None else 0)) * nb
    top_mask = torch.arange(keep, device=dev) < nb  # only the best `nb` continuations may finish
    fill = int(eos[0]) if eos is not None else 0

    running = torch.full((batch, nb, max_len), fill, dtype=torch.long, device=dev)
    running[:, :, :prompt_len] = prompt[:, None]
    finished = running.clone()
    running_scores = torch.zeros(batch, nb, device=dev)
    running_scores[:, 1:] = IMPOSSIBLE  # all beams start equal: let only the first one propose
    finished_scores = torch.full((batch, nb), IMPOSSIBLE, device=dev)
    finished_len = torch.zeros(batch, nb, dtype=torch.long, device=dev)  # new tokens of each finished beam
    is_finished = torch.zeros(batch, nb, dtype=torch.bool, device=dev)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=dev)
    offsets = torch.arange(batch, device=dev)[:, None] * nb
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(batch, s.max_new_tokens)], 1).repeat_interleave(nb, dim=0)
    min_keep = (len(eos) if eos is not None else 1) + 1  # transformers' min_tokens_to_keep for beam sampling
    record = []

    logits = steps.prefill(running[:, :, :prompt_len].reshape(batch * nb, prompt_len),
                           mask[:, :prompt_len] if mask is not None else None)
    for cur_len in range(prompt_len, max_len):
        if cur_len > prompt_len:
            logits = steps.step(running[:, :, :cur_len].reshape(batch * nb, cur_len),
                                mask[:, :cur_len] if mask is not None else None)
        log_probs = F.log_softmax(logits.float(), dim=-1)  # [batch * beams, vocab]
        if eos is not None and cur_len - prompt_len < min_new:
            log_probs = log_probs.index_fill(1, eos, -math.inf)
        if sampling:
            log_probs = transform(log_probs, s, min_keep)
        vocab = log_probs.shape[-1]
        total = (log_probs.view(batch, nb, vocab) + running_scores[:, :, None]).reshape(batch, nb * vocab)

        # Top continuations over all beams (sampled without replacement with do_sample).
        if sampling:
            idx = torch.multinomial(F.softmax(total, dim=-1), keep, generator=gen)
            cand_scores = torch.gather(total, 1, idx)
            cand_scores, order = cand_scores.sort(dim=-1, descending=True)
            idx = idx.gather(-1, order)
        else:
            cand_scores, idx = torch.topk(total, keep)  # [batch, keep]
        cand_beam, cand_token = idx // vocab, idx % vocab
        cand_seqs = _take(running, cand_beam)  # [batch, keep, max_len]
        cand_seqs[:, :, cur_len] = cand_token
        ends = cur_len + 1 >= max_len
        hits = torch.isin(cand_token, eos) if eos is not None else torch.zeros_like(cand_token, dtype=torch.bool)
        if ends:
            hits = torch.ones_like(hits)

        # The best continuations that did not end run on.
        run_scores = cand_scores + hits.to(torch.float32) * IMPOSSIBLE
        chosen = torch.topk(run_scores, k=nb)[1]  # [batch, beams]
        running = _take(cand_seqs, chosen)
        running_scores = _take(run_scores, chosen)
        parents = _take(cand_beam, chosen)
        if trace:
            # At the last step every continuation ends and none runs on: show the best ones instead.
            shown = torch.arange(nb, device=dev).expand(batch, nb) if ends else chosen
            record.append(Step(cur_len - prompt_len, _take(cand_token, shown), *_top(log_probs, top_n),
                               parents=_take(cand_beam, shown), scores=_take(cand_scores, shown)))

        # Those that ended compete with the finished ones for the `beams` slots.
        just_finished = hits & top_mask[None, :]
        fin_scores = cand_scores / ((cur_len + 1 - prompt_len) ** lp)
        fin_scores += (torch.all(is_finished, dim=-1, keepdim=True) & early).to(torch.float32) * IMPOSSIBLE
        fin_scores += (~improvable).to(torch.float32) * IMPOSSIBLE
        fin_scores += (~just_finished) * IMPOSSIBLE
        merged_scores = torch.cat((finished_scores, fin_scores), dim=1)
        best = torch.topk(merged_scores, k=nb)[1]
        finished = _take(torch.cat((finished, cand_seqs), dim=1), best)
        finished_scores = _take(merged_scores, best)
        cand_len = torch.full_like(cand_token, cur_len + 1 - prompt_len)
        finished_len = _take(torch.cat((finished_len, cand_len), dim=1), best)
        is_finished = _take(torch.cat((is_finished, just_finished), dim=1), best)

        if ends:
            break
        steps.reorder((parents + offsets).reshape(-1))

        # Stop once no running beam can beat the worst finished one (transformers' heuristic).
        new_len = cur_len + 1 - prompt_len
        best_running = running_scores[:, :1] / (new_len**lp)
        worst_finished = torch.where(is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], IMPOSSIBLE)
        improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        open_beams = ~(torch.all(is_finished) & early)
        if not bool(torch.any(improvable) & open_beams & ~torch.all(hits)):
            break

    n = s.num_return_sequences
    sequences = finished[:, :n].reshape(batch * n, max_len)
    length = prompt_len + int(finished_len[:, :n].max())
    return sequences[:, :length], finished_scores[:, :n].reshape(-1), record


# ----------------------------------------------------------------------------------------------------
# The entry point


def _eos_tensor(model, eos_token_id, device) -> Optional[torch.Tensor]:
    if eos_token_id is None:
        eos_token_id = getattr(model.config, "eos_token_id", None)
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


def _context(model) -> Optional[int]:
    from gptfit.models import model_context

    return model_context(model)


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


def generate(
    model,
    input_ids: torch.LongTensor,  # [batch, prompt]
    setting: Any = None,
    *,
    attention_mask: Optional[torch.Tensor] = None,  # [batch, prompt], 0 = left padding
    seed: int = 0,
    eos_token_id: Union[int, Sequence[int], None] = None,
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
    from gptfit.model import GPTForCausalLM

    s = as_setting(setting)
    strategy = strategy_of(s)
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise UserError(f"generate: input_ids must be [batch, prompt] with a prompt of at least one token, "
                        f"got shape {tuple(input_ids.shape)}")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        if bool(attention_mask.all()):
            attention_mask = None  # nothing is padded: take the unmasked (fast) attention
    eos = _eos_tensor(model, eos_token_id, device)
    meta = dict(strategy=strategy, setting=dataclasses.asdict(s), seed=seed, prompt_length=input_ids.shape[1])

    beams = strategy in ("beam", "beam_sample")
    if not beams and s.num_return_sequences > 1:
        # Sampled (or, at temperature 0, greedy) sequences of one prompt sit next to each other.
        input_ids = input_ids.repeat_interleave(s.num_return_sequences, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(s.num_return_sequences, dim=0)

    context = _context(model)
    too_long = context is not None and input_ids.shape[1] + s.max_new_tokens > context
    ours = isinstance(model, GPTForCausalLM)
    if not ours and use_cache and not too_long and not (trace and beams):
        return _via_generate(model, input_ids, attention_mask, s, eos, min_new_tokens, trace, trace_top, meta)

    rows = input_ids.shape[0] * (s.num_beams if beams else 1)
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _small_step_kernels(model, device):
            if ours and use_cache:
                backend, steps = "cached", _CachedSteps(model, rows, input_ids.shape[1] + s.max_new_tokens)
            else:
                backend, steps = "window", _WindowSteps(model, context)
            if beams:
                seqs, scores, record = _beam_search(steps, input_ids, attention_mask, s, strategy == "beam_sample",
                                                    gen, eos, min_new_tokens, trace, trace_top)
            else:
                seqs, record = _one_at_a_time(steps, input_ids, attention_mask, s, strategy == "sample", gen, eos,
                                              min_new_tokens, trace, trace_top)
                scores = None
    finally:
        model.train(was_training)
    return Generation(seqs, backend=backend, scores=scores, steps=record, **meta)


def _via_generate(model, input_ids, attention_mask, s, eos, min_new, trace, top_n, meta) -> Generation:
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
        max_new_tokens=s.max_new_tokens, min_new_tokens=min_new, do_sample=sampling,
        num_beams=s.num_beams if beams else 1, length_penalty=s.length_penalty,
        early_stopping=bool(s.early_stopping), num_return_sequences=s.num_return_sequences if beams else 1,
        eos_token_id=eos_ids, pad_token_id=pad, repetition_penalty=1.0, no_repeat_ngram_size=0,
        return_dict_in_generate=True, output_scores=trace or beams,
    )
    if sampling:
        # No library warper, whatever the model's generation_config says: gptfit's transforms are the only ones.
        options.update(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    device = input_ids.device
    devices = [device.index or 0] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        # Sampling in `generate` draws from the global RNG: fork it so that the caller's state is untouched.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(meta["seed"])
            out = model.generate(input_ids, attention_mask=attention_mask, logits_processor=processors, **options)
    finally:
        model.train(was_training)
    record = []
    if trace and not beams:
        prompt_len = meta["prompt_length"]
        for t, scores in enumerate(out.scores):
            record.append(Step(t, out.sequences[:, prompt_len + t].clone(), *_top(scores, top_n)))
    scores = getattr(out, "sequences_scores", None) if beams else None
    return Generation(out.sequences, backend="generate", scores=scores, steps=record, **meta)
