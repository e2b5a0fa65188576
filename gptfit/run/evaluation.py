"""What a run measures at each evaluation: losses, memorization, and samples under every decoding setting.

Everything measured is fixed when the run starts (windows, prompts, the training-text n-gram index),
so two evaluations differ only by the model. Decoding uses its own seeded generator (seed and step),
so evaluating never moves the random state that training depends on.

On the grammar (data=grammar) the evaluations with samples also set the model against the grammar
(`gptfit.metrics.grammar.GrammarProbe`): the NLL of held-out sentences under each, and every complete
sentence of the samples classified as copied from training, novel and valid, or invalid.

With general corpora (eval.general, resolved by gptfit.config.general_corpora) every evaluation also scores
their held-out text (general/<name>/loss and bpb, and forgetting/<name>: the change since step 0), and the
samples also start from general text, which gives how narrow they are (gptfit.metrics.diversity). Without
them (a run from scratch) none of this is measured or written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from gptfit.config import DataConfig, EvalConfig, GeneralCorpus, GoldfishConfig, GrammarConfig
from gptfit.core.attention import attention_maps, head_entropy
from gptfit.core.decoding_settings import DecodingConfig
from gptfit.core.sampling.decode import generate_each
from gptfit.data.corpus import Corpus
from gptfit.data.duplicates import spans
from gptfit.data.general import general_texts
from gptfit.data.tokenizer import encode_text, tokenizer_hash
from gptfit.data.windows import fixed_windows
from gptfit.errors import UserError
from gptfit.metrics import sequences
from gptfit.metrics.canaries import canary_exposures
from gptfit.metrics.capacity import capacity_keys, dataset_bits, uniform_bits
from gptfit.metrics.diversity import narrowness
from gptfit.metrics.grammar import GrammarProbe
from gptfit.metrics.ngrams import NgramIndex
from gptfit.metrics.scoring import score_sequences
from gptfit.model.loading import load_model, load_tokenizer, resolve_model_dir
from gptfit.plots.attention import heatmap_grid, line_diagram

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


def _sampled_windows(stream: np.ndarray, length: int, count: int, seed: int) -> torch.Tensor:
    """[count, length] windows at seeded random offsets (distinct where the stream allows)."""
    high = len(stream) - length + 1
    rng = np.random.default_rng(seed)
    offsets = rng.choice(high, size=count, replace=False) if high >= count else rng.integers(0, high, count)
    return torch.from_numpy(np.asarray(stream, dtype=np.int64)[np.sort(offsets)[:, None] + np.arange(length)])


def _until_eot(tokens: np.ndarray, eot: int) -> np.ndarray:
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


def attention_ids(tokenizer, prompt: str, val: np.ndarray, block_size: int) -> list[int]:
    """The attention pictures' prompt, at most a window long; where the tokenizer cannot spell it
    (data=uniform), the start of the held-out text instead, with a warning."""
    ids = encode_text(tokenizer, prompt)
    if ids is None:
        log.warning("eval.attention_prompt: the tokenizer cannot encode it; the start of the held-out text instead")
        ids = val[:block_size].tolist()
    return ids[:block_size]


def load_reference(path: str, ours: str):
    """The reference model of the membership score `reference`, which must share the run's tokenizer
    (`ours`: its hash)."""
    directory = resolve_model_dir(path, key="eval.mia.reference")
    theirs = tokenizer_hash(load_tokenizer(str(directory)))
    if theirs != ours:
        raise UserError(
            f"eval.mia.reference={path!r}: its tokenizer ({theirs}) is not this run's ({ours}), so "
            "it cannot score the same tokens; use a model trained with this corpus's tokenizer (same "
            "data source, data.split_seed, data.val_fraction and data.vocab_size)"
        )
    return load_model(str(directory))


def sampling_seed(seed: int, step: int) -> int:
    """The seed of an evaluation's decoding: its own per run seed and step, so that evaluating never moves the
    random state that training depends on, and a resumed run samples what an uninterrupted one would."""
    return seed * 1_000_003 + step


class Evaluator:
    """Everything an evaluation measures, fixed when the run starts. `seed` is the run's (it seeds decoding),
    `split_seed` the data's (it draws the held-out prompts and bootstraps); `grammar` is data.grammar on
    data=grammar, else None; `general`: the run's general corpora, resolved (`general_corpora`), read and
    cached in `cache_dir` (data.cache_dir); `goldfish`: train.goldfish (with k set, the table gets the
    `goldfish_dropped` column)."""

    def __init__(
        self,
        eval: EvalConfig,
        decoding: dict[str, DecodingConfig],
        corpus: Corpus,
        tokenizer,
        *,
        block_size: int,
        eval_every: int,
        seed: int,
        split_seed: int,
        grammar: GrammarConfig | None = None,
        general: Sequence[GeneralCorpus] = (),
        cache_dir: str = DataConfig.cache_dir,
        goldfish: GoldfishConfig | None = None,
    ):
        e, block = eval, block_size
        self.eval, self.corpus, self.tokenizer = eval, corpus, tokenizer
        self.block_size, self.eval_every, self.seed, self.split_seed = block_size, eval_every, seed, split_seed
        # On data=uniform the windows start where sequences start: elsewhere they would cut them, and the
        # losses would be a memorizing model's on text it never saw in that place
        stride = corpus.uniform.length + 1 if corpus.uniform is not None else 1
        self.train_windows = fixed_windows(corpus.train, block, e.train_windows, stride)
        self.val_windows = fixed_windows(corpus.val, block, e.val_windows, stride)
        self.span = e.prefix_tokens + e.suffix_tokens
        groups = corpus.planted + ([corpus.forgotten] if corpus.forgotten is not None else [])
        planted = spans(len(corpus.train), groups, self.span) if groups else None
        if corpus.subset is not None:  # every candidate, whatever eval.sequences says
            self.sides = sequences.subset_sides(corpus.subset)
        elif corpus.uniform is not None:  # the sequences themselves (the config made L their length)
            self.sides = sequences.uniform_sides(corpus.uniform, e.sequences)
        else:
            self.sides = sequences.both_sides(corpus.train, corpus.val, corpus.eot_id, self.span, e.sequences, planted)
        if corpus.planted:
            self.sides += sequences.duplicate_sides(corpus.train, corpus.eot_id, corpus.planted, corpus.aside)
        if corpus.forgotten is not None:
            self.sides.append(sequences.planted_side(corpus.train, corpus.eot_id, [corpus.forgotten], "forget"))
        seed = split_seed
        reference = load_reference(e.mia.reference, corpus.tokenizer_hash) if e.mia.reference else None
        sequences.prepare_membership(self.sides, tokenizer, reference, e.batch_size, seed)
        # capacity/dataset_bits: the training set's information, exact on data=uniform, else as the reference
        # knows it (None without one)
        if corpus.uniform is not None:
            self.dataset_bits = -corpus.uniform.reference_log2() * len(corpus.uniform.train)
        elif reference is not None:
            self.dataset_bits = dataset_bits(reference, corpus.train, block, e.batch_size)
        else:
            self.dataset_bits = None
        self.bits_at: tuple[int, float] | None = None  # (step, capacity/bits_total) of the latest evaluation
        self.goldfish_dropped = None  # [rows], fixed for the run: it depends on the tokens alone
        if goldfish is not None and goldfish.k is not None:
            streams = {"train": corpus.train, "val": corpus.val}
            self.goldfish_dropped = sequences.goldfish_dropped(
                self.sides, streams, e.prefix_tokens, goldfish.k, goldfish.h
            )
        self.decoding = dict(decoding)
        self.index = NgramIndex(corpus.train, e.copy_span) if self.decoding else None
        self.grammar = GrammarProbe(grammar, eval, block_size, corpus, tokenizer) if grammar is not None else None
        # On the grammar a sample goes on past end-of-text, so that it holds several whole sentences.
        self.stop_at_eot = self.grammar is None
        # Prompts: held-out prefixes (the same every time), then the configured texts.
        if self.grammar is not None:
            heldout = self.grammar.prompts(e.heldout_prompts, e.grammar_prompt_tokens)
        else:
            heldout = (
                _sampled_windows(corpus.val, e.prompt_tokens, e.heldout_prompts, seed + 2).tolist()
                if e.heldout_prompts
                else []
            )
        self.prompts = [("held-out", p) for p in heldout]
        self.prompts += [("prompt", ids) for ids in text_prompts(tokenizer, e.prompts)]
        texts = general_texts(list(general), tokenizer, corpus.eot_id, cache_dir, block)
        # name -> [windows, block_size] fixed windows of its held-out text, in eval.general's order
        self.general = {text.name: fixed_windows(text.val, block, c.windows) for text, c in zip(texts, general)}
        self.start_losses: dict[str, float] = {}  # name -> the starting model's general loss (step 0)
        if texts and e.general_prompts:  # from the first corpus only: one general text to compare prompts on
            drawn = _sampled_windows(texts[0].val, e.prompt_tokens, e.general_prompts, seed + 3)  # [count, tokens]
            self.prompts += [("general", p) for p in drawn.tolist()]
        # Only eval.attention draws it: a prompt that cannot be spelled is said only where it matters.
        self.attention_ids = attention_ids(tokenizer, e.attention_prompt, corpus.val, block_size) if e.attention else []

    # -- losses and memorization ---------------------------------------------------------------------

    def _loss_keys(self, prefix: str, losses: torch.Tensor, windows: torch.Tensor) -> dict:
        """Mean next-token loss, perplexity and bits per byte from per-window mean losses."""
        mean = float(losses.mean())
        n_bytes = int(self.corpus.token_bytes[windows[:, 1:].numpy()].sum())
        nats = float(losses.sum()) * (windows.shape[1] - 1)
        return {
            f"{prefix}/loss": mean,
            f"{prefix}/ppl": math.exp(min(mean, 50.0)),
            f"{prefix}/bpb": nats / (math.log(2) * max(n_bytes, 1)),
        }

    def losses(self, model) -> dict:
        bs = self.eval.batch_size
        row = self._loss_keys("train", score_sequences(model, self.train_windows, bs).mean(), self.train_windows)
        row.update(self._loss_keys("val", score_sequences(model, self.val_windows, bs).mean(), self.val_windows))
        row["gap"] = row["val/loss"] - row["train/loss"]
        return row

    def general_losses(self, model, step: int) -> dict:
        """general/<name>/loss and bpb of each general corpus, and forgetting/<name>: the loss minus the
        starting model's (remembered at step 0, or from the run's first row on resume: `remember_start`)."""
        row = {}
        for name, windows in self.general.items():
            losses = score_sequences(model, windows, self.eval.batch_size).mean()  # [windows]
            keys = self._loss_keys(f"general/{name}", losses, windows)
            del keys[f"general/{name}/ppl"]  # loss and bpb say it all; the names table holds no ppl here
            row.update(keys)
            loss = keys[f"general/{name}/loss"]
            if step == 0:
                self.start_losses[name] = loss
            if name in self.start_losses:
                row[f"forgetting/{name}"] = loss - self.start_losses[name]
        return row

    def remember_start(self, first_row: dict) -> None:
        """A resumed run's starting losses, from its metrics row of step 0 (the tracker's first row), so that
        its forgetting/<name> values equal an uninterrupted run's. A row of another step is ignored."""
        if first_row.get("step") != 0:
            return
        for name in self.general:
            loss = first_row.get(f"general/{name}/loss")
            if isinstance(loss, (int, float)):
                self.start_losses[name] = float(loss)

    def memorization(self, model, step: int = 0, exposure=None, final: bool = False) -> tuple[dict, pa.Table]:
        """The per-sequence table of this evaluation and the mem/ and mia/ keys taken from it, and the
        canaries. exposure: the ledger's (starts, last_seen) so far; None: nothing seen yet. final: the
        last evaluation, which also bootstraps the intervals of the mia/ keys."""
        e = self.eval
        table = sequences.score(
            model,
            self.sides,
            e.prefix_tokens,
            self.decoding,
            e.batch_size,
            step,
            sampling_seed(self.seed, step),
            e.mia.k,
        )
        if exposure is None:
            exposure = (np.zeros(len(self.corpus.train), np.int64), np.full(len(self.corpus.train), -1, np.int64))
        columns = sequences.exposure_columns(self.sides, *exposure, self.span, self.block_size)
        if self.goldfish_dropped is not None:
            columns["goldfish_dropped"] = self.goldfish_dropped
        for key, values in columns.items():
            table = table.append_column(key, pa.array(values))
        row = sequences.aggregates(table, e.extraction_samples, e.mia.bootstrap if final else 0, self.split_seed)
        if self.corpus.uniform is not None:
            row.update(capacity_keys(model, self.capacity_bits(model, step, table)))
        row.update(
            canary_exposures(
                model,
                self.corpus.canaries,
                self.tokenizer,
                self.corpus.eot_id,
                e.canary_candidates,
                self.split_seed,
            )
        )
        return row, table

    def capacity_bits(self, model, step: int, table: pa.Table | None = None) -> float:
        """capacity/bits_total at this step (data=uniform), computed once a step: train.saturation asks for it
        before the evaluation that logs it."""
        if self.bits_at is None or self.bits_at[0] != step:
            self.bits_at = (step, uniform_bits(model, self.corpus.uniform, table, self.eval.batch_size))
        return self.bits_at[1]

    # -- samples and how much of them is copied ------------------------------------------------------

    def samples(self, model, step: int) -> tuple[dict, list[Sample]]:
        if not self.decoding or not self.prompts:
            return {}, []
        eot = self.corpus.eot_id
        longest = max(len(ids) for _, ids in self.prompts)
        # Left padding, so every prompt ends where decoding starts.
        ids = torch.full((len(self.prompts), longest), eot, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (_, prompt) in enumerate(self.prompts):
            ids[i, longest - len(prompt) :] = torch.tensor(prompt)
            mask[i, longest - len(prompt) :] = 1
        row, samples = {}, []
        # Every setting from the same prompts: the greedy and sampled ones share each forward pass.
        seed = sampling_seed(self.seed, step)
        generations = generate_each(
            model,
            ids,
            self.decoding,
            attention_mask=mask,
            seed=seed,
            eos_token_id=eot if self.stop_at_eot else [],
            rows_at_once=self.eval.batch_size,
        )
        for name, setting in self.decoding.items():
            new = generations[name].new_tokens.cpu().numpy()  # [prompts * samples per prompt, new]
            per_prompt = new.shape[0] // len(self.prompts)
            prompts = [self.prompts[r // per_prompt] for r in range(len(new))]
            completions = [_until_eot(tokens, eot) for tokens in new]
            shown = completions if self.stop_at_eot else new
            for (source, prompt), tokens, text in zip(prompts, completions, shown):
                samples.append(
                    Sample(
                        step,
                        name,
                        setting_params(setting),
                        source,
                        self.tokenizer.decode(prompt),
                        self.tokenizer.decode(text),
                        self.index.novelty([tokens], 8),
                        self.index.longest_copy(tokens)[0],
                        self.index.has_copy(tokens),
                        [int(t) for t in prompt],
                        [int(t) for t in text],
                    )
                )
            row.update(self.copy_metrics(name, completions))
            if self.general:  # without general corpora the rows stay as they were (tiny_corpus's keys)
                row.update(narrowness(name, completions, [source for source, _ in prompts], self.index))
            if self.grammar is not None:
                row.update(self.grammar.shares(name, [prompt for _, prompt in prompts], new))
        return row, samples

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

    def attention(self, model) -> tuple[dict, dict]:
        """Per-head entropy of the fixed prompt's attention, and its pictures (matplotlib figures)."""
        maps = attention_maps(model, torch.tensor(self.attention_ids))
        entropy = head_entropy(maps)
        row = {
            f"attn/l{layer}h{h}/entropy": float(entropy[layer, h])
            for layer in range(maps.shape[0])
            for h in range(maps.shape[1])
        }
        labels = [repr(self.tokenizer.decode([t]))[1:-1] for t in self.attention_ids]
        figures = {
            "attention/heatmaps": heatmap_grid(maps, labels),
            "attention/lines": line_diagram(maps, labels, layer=maps.shape[0] - 1),
        }
        return row, figures

    def __call__(self, model, step: int, final: bool = False, exposure=None) -> tuple[dict, list[Sample], pa.Table]:
        """One evaluation's metrics row, samples and per-sequence table (None when not measured); the costly
        parts only every k-th time and at the end."""
        row = self.losses(model)
        row.update(self.general_losses(model, step))
        samples: list[Sample] = []
        table = None
        # The k-th evaluation by step, not by count, so that a resumed run keeps the same cadence.
        index = step // self.eval_every
        if final or index % self.eval.memorization_every == 0:
            measured, table = self.memorization(model, step, exposure, final)
            row.update(measured)
        if final or index % self.eval.generation_every == 0:
            if self.grammar is not None:
                row.update(self.grammar.nll(model))
            gen_row, samples = self.samples(model, step)
            row.update(gen_row)
        return row, samples, table
