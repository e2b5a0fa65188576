"""Samples under every decoding setting at the generation cadence, and how much of them is copied.

The prompts are fixed when the run starts: held-out prefixes (eval.heldout_prompts; on data=grammar the
starts of held-out sentences), then the texts of eval.prompts, then, with general corpora, prefixes of the
first one's held-out text (eval.general_prompts), which give how narrow the samples are
(gptfit.metrics.diversity). Every setting decodes the same prompts in one batch (`generate_each`) with its
own seeded generator (seed and step), so evaluating never moves the random state that training depends on.
The decoded tokens stay on the `Evaluation` for the measures after this one (measures/grammar.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gptfit.core.sampling.decode import generate_each
from gptfit.data.tokenizer import encode_text
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.measures.grammar import sentence_starts
from gptfit.measures.table import sampling_seed
from gptfit.metrics.diversity import narrowness
from gptfit.metrics.ngrams import NgramIndex

log = logging.getLogger(__name__)


@dataclass
class Sample:
    step: int
    decoding: str
    params: str
    source: str  # "held-out", "prompt" or "general"
    prompt: str
    completion: str
    novel_8gram: float | None
    longest_copy_tokens: int
    copied: bool
    prompt_ids: list[int] | None = None  # the token ids behind `prompt` and `completion` (samples.jsonl)
    completion_ids: list[int] | None = None


def setting_params(setting) -> str:
    if not setting.do_sample or setting.temperature == 0:
        return f"beams={setting.num_beams}" if setting.num_beams > 1 else "greedy"
    parts = [f"T={setting.temperature:g}"]
    if setting.top_k:
        parts.append(f"k={setting.top_k}")
    if setting.top_p < 1:
        parts.append(f"p={setting.top_p:g}")
    if setting.num_beams > 1:
        parts.append(f"beams={setting.num_beams}")
    return " ".join(parts)


def sampled_windows(stream: np.ndarray, length: int, count: int, seed: int) -> torch.Tensor:
    """[count, length] windows at seeded random offsets (distinct where the stream allows)."""
    high = len(stream) - length + 1
    rng = np.random.default_rng(seed)
    offsets = rng.choice(high, size=count, replace=False) if high >= count else rng.integers(0, high, count)
    return torch.from_numpy(np.asarray(stream, dtype=np.int64)[np.sort(offsets)[:, None] + np.arange(length)])


def until_eot(tokens: np.ndarray, eot: int) -> np.ndarray:
    end = np.flatnonzero(tokens == eot)
    return tokens[: end[0]] if len(end) else tokens


def text_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The ids of each text prompt that the tokenizer can spell; the others (words, under data=uniform's
    symbols) are skipped with a warning."""
    out = []
    for text in texts:
        ids = encode_text(tokenizer, text)
        if ids is None:
            log.warning("eval.prompts: skipped %r, which the tokenizer cannot encode", text)
        else:
            out.append(ids)
    return out


def prompts_of(setup: Setup) -> list[tuple[str, list[int]]]:
    """(source, token ids) of every prompt, in the order the module doc gives."""
    e, corpus = setup.eval, setup.corpus
    if setup.grammar is not None:
        heldout = sentence_starts(corpus, setup.tokenizer, e.heldout_prompts, e.grammar_prompt_tokens)
    elif e.heldout_prompts:
        heldout = sampled_windows(corpus.val, e.prompt_tokens, e.heldout_prompts, setup.split_seed + 2).tolist()
    else:
        heldout = []
    prompts = [("held-out", p) for p in heldout]
    prompts += [("prompt", ids) for ids in text_prompts(setup.tokenizer, e.prompts)]
    texts = setup.general_held_out
    if texts and e.general_prompts:  # from the first corpus only: one general text to compare prompts on
        drawn = sampled_windows(texts[0].val, e.prompt_tokens, e.general_prompts, setup.split_seed + 3)
        prompts += [("general", p) for p in drawn.tolist()]  # drawn: [count, tokens]
    return prompts


class Generation(Measure):
    keys = (
        "gen/<name>/novel_<n>gram",
        "gen/<name>/longest_copy_tokens",
        "gen/<name>/longest_copy_chars",
        "gen/<name>/copy_rate",
        "gen/<name>/distinct_<n>",
        "gen/<name>/general_copy_rate",
    )
    when = When.SAMPLES

    def __init__(self, setup: Setup, prompts: list[tuple[str, list[int]]]):
        self.decoding, self.prompts, self.tokenizer = dict(setup.decoding), prompts, setup.tokenizer
        self.eot, self.seed, self.eval = setup.corpus.eot_id, setup.seed, setup.eval
        self.index = NgramIndex(setup.corpus.train, setup.eval.copy_span)
        self.narrowness = bool(setup.general)  # without general corpora the rows stay tiny_corpus's
        self.stop_at_eot = setup.grammar is None  # on the grammar a sample holds several whole sentences

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[prompts, longest] ids and attention mask, left-padded so every prompt ends where decoding starts."""
        longest = max(len(ids) for _, ids in self.prompts)
        ids = torch.full((len(self.prompts), longest), self.eot, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (_, prompt) in enumerate(self.prompts):
            ids[i, longest - len(prompt) :] = torch.tensor(prompt)
            mask[i, longest - len(prompt) :] = 1
        return ids, mask

    def __call__(self, ev: Evaluation) -> dict:
        ids, mask = self.padded()
        generations = generate_each(  # the greedy and sampled settings share each forward pass
            ev.model,
            ids,
            self.decoding,
            attention_mask=mask,
            seed=sampling_seed(self.seed, ev.step),
            eos_token_id=self.eot if self.stop_at_eot else [],
            rows_at_once=self.eval.batch_size,
        )
        row = {}
        for name, setting in self.decoding.items():
            new = generations[name].new_tokens.cpu().numpy()  # [prompts * samples per prompt, new]
            per_prompt = new.shape[0] // len(self.prompts)
            prompts = [self.prompts[r // per_prompt] for r in range(len(new))]
            completions = [until_eot(tokens, self.eot) for tokens in new]
            shown = completions if self.stop_at_eot else new
            ev.samples += [self.sample(ev.step, name, setting, *args) for args in zip(prompts, completions, shown)]
            ev.decoded[name] = ([prompt for _, prompt in prompts], new)
            row.update(self.copy_metrics(name, completions))
            if self.narrowness:
                row.update(narrowness(name, completions, [source for source, _ in prompts], self.index))
        return row

    def sample(self, step: int, name: str, setting, prompt: tuple[str, list[int]], tokens, shown) -> Sample:
        source, ids = prompt
        return Sample(
            step,
            name,
            setting_params(setting),
            source,
            self.tokenizer.decode(ids),
            self.tokenizer.decode(shown),
            self.index.novelty([tokens], 8),
            self.index.longest_copy(tokens)[0],
            self.index.has_copy(tokens),
            [int(t) for t in ids],
            [int(t) for t in shown],
        )

    def copy_metrics(self, name: str, completions: list[np.ndarray]) -> dict:
        row = {}
        for n in range(1, self.eval.max_ngram + 1):
            novel = self.index.novelty(completions, n)
            if novel is not None:
                row[f"gen/{name}/novel_{n}gram"] = novel
        copies = [self.index.longest_copy(c) for c in completions]
        best = max(range(len(copies)), key=lambda i: copies[i][0])
        length, start = copies[best]
        row[f"gen/{name}/longest_copy_tokens"] = length
        row[f"gen/{name}/longest_copy_chars"] = len(self.tokenizer.decode(completions[best][start : start + length]))
        row[f"gen/{name}/copy_rate"] = float(np.mean([self.index.has_copy(c) for c in completions]))
        return row


def build(setup: Setup) -> Generation | None:
    prompts = prompts_of(setup)
    return Generation(setup, prompts) if setup.decoding and prompts else None
