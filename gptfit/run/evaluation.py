"""What a run measures at each evaluation: losses, memorization, and samples under every decoding setting.

Everything measured is fixed when the run starts (windows, prompts, the training-text n-gram index),
so two evaluations differ only by the model. Decoding uses its own seeded generator (seed and step),
so evaluating never moves the random state that training depends on.

On the grammar (data=grammar) the evaluations with samples also set the model against the grammar
(`GrammarProbe`): the NLL of held-out sentences under each, and every complete sentence of the samples
classified as copied from training, novel and valid, or invalid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gptfit.core.sampling.decode import generate
from gptfit.data.corpus import Corpus
from gptfit.data.grammar import Grammar, classify, spec_of
from gptfit.data.windows import fixed_windows
from gptfit.metrics.canaries import canary_exposures
from gptfit.metrics.memorization import mia_auc, window_stats
from gptfit.metrics.ngrams import NgramIndex


@dataclass
class Sample:
    step: int
    decoding: str
    params: str
    source: str  # "held-out" or "prompt"
    prompt: str
    completion: str
    novel_8gram: float | None
    longest_copy_tokens: int
    copied: bool


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


def complete_sentences(prompt: Sequence[int], new: Sequence[int], eot: int) -> list[list[int]]:
    """The documents of prompt + new known whole: each starts right after an end-of-text token (in the
    prompt or the new tokens) and is ended by one among the new tokens. A first stretch whose start the
    prompt cut off, and the unfinished tail, are left out."""
    ids = [*prompt, *new]
    ends = [i for i, t in enumerate(ids) if t == eot]
    return [ids[a + 1 : b] for a, b in zip(ends, ends[1:]) if b >= len(prompt)]


@torch.no_grad()
def sentence_nll(model, sentences: list[list[int]], eot: int, batch_size: int) -> np.ndarray:
    """[n] nats: each sentence's tokens and the end-of-text token after it, from a context of one
    end-of-text token (the start of a document), summed."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(sentences), batch_size):
            batch = sentences[i : i + batch_size]
            length = max(map(len, batch)) + 2
            ids = torch.full((len(batch), length), eot, dtype=torch.long)  # [b, time]; right padding
            scored = torch.zeros(len(batch), length - 1, dtype=torch.bool)  # [b, time - 1]: targets counted
            for r, tokens in enumerate(batch):
                ids[r, 1 : len(tokens) + 1] = torch.tensor(tokens)
                scored[r, : len(tokens) + 1] = True
            ids = ids.to(device)
            logits = model(input_ids=ids[:, :-1]).logits.float()  # [b, time - 1, vocab]
            loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # [b, time - 1]
            out.append((loss * scored.to(device)).sum(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


class GrammarProbe:
    """data=grammar: the model against the grammar that generated its corpus.

    - val_nll_model / val_nll_true: mean NLL (nats) of the first `eval.grammar_sentences` held-out
      sentences (those that fit one window) under the model and under the grammar. The model's is the
      NLL of one tokenization of the sentence, an upper bound on its NLL of the string.
    - per decoding setting: the complete sentences of the samples (`complete_sentences`), as shares
      copied (verbatim a sentence of the training set actually used), novel and valid, and invalid.
    """

    def __init__(self, cfg, corpus: Corpus, tokenizer):
        self.grammar = Grammar(spec_of(cfg.data.grammar))
        self.training = set(corpus.train_documents)
        self.eot, self.tokenizer, self.batch_size = corpus.eot_id, tokenizer, cfg.eval.batch_size
        self.dropped = corpus.val_dropped
        encoded = tokenizer(corpus.val_documents, add_special_tokens=False)["input_ids"]
        # The held-out sentences in split order, with their tokens; scored ones fit a window after end-of-text.
        self.heldout = list(zip(corpus.val_documents, encoded))
        fit = [(s, ids) for s, ids in self.heldout if len(ids) + 1 <= cfg.model.block_size]
        fit = fit[: cfg.eval.grammar_sentences]
        self.nll_sentences = [ids for _, ids in fit]
        self.nll_true = float(np.mean([-self.grammar.logprob(s) for s, _ in fit])) if fit else None

    def prompts(self, count: int, length: int) -> list[list[int]]:
        """End-of-text and the first `length` tokens of held-out sentences (longer than that), all different."""
        out: list[list[int]] = []
        for _, ids in self.heldout:
            prompt = [self.eot, *ids[:length]]
            if len(out) == count:
                break
            if len(ids) > length and prompt not in out:
                out.append(prompt)
        return out

    def nll(self, model) -> dict:
        row = {"grammar/val_dropped": self.dropped}
        if self.nll_sentences:
            row["grammar/val_nll_model"] = float(sentence_nll(model, self.nll_sentences, self.eot,
                                                              self.batch_size).mean())
            row["grammar/val_nll_true"] = self.nll_true
        return row

    def shares(self, name: str, sentences: list[list[int]]) -> dict:
        """Shares copied / novel_valid / invalid (left out when no sentence was complete), and the count."""
        counts = classify([self.tokenizer.decode(ids) for ids in sentences], self.training, self.grammar)
        row = {f"grammar/{name}/sentences": counts["n"]}
        if counts["n"]:
            row.update({f"grammar/{name}/{k}": counts[k] for k in ("copied", "novel_valid", "invalid")})
        return row


class Evaluator:
    def __init__(self, cfg, corpus: Corpus, tokenizer):
        e, block = cfg.eval, cfg.model.block_size
        self.cfg, self.corpus, self.tokenizer = cfg, corpus, tokenizer
        self.train_windows = fixed_windows(corpus.train, block, e.train_windows)
        self.val_windows = fixed_windows(corpus.val, block, e.val_windows)
        self.mia_train = fixed_windows(corpus.train, block, e.mia_windows)
        self.mia_val = fixed_windows(corpus.val, block, e.mia_windows)
        span = e.prefix_tokens + e.suffix_tokens
        seed = cfg.data.split_seed
        self.extract_train = _sampled_windows(corpus.train, span, e.extraction_windows, seed)
        self.extract_val = _sampled_windows(corpus.val, span, e.extraction_windows, seed + 1)
        self.decoding = dict(cfg.decoding)
        self.index = NgramIndex(corpus.train, e.max_ngram, e.copy_span) if self.decoding else None
        self.grammar = GrammarProbe(cfg, corpus, tokenizer) if cfg.data.source == "grammar" else None
        # Prompts: held-out prefixes (the same every time), then the configured texts. On the grammar a
        # held-out prompt is the start of a held-out sentence, so that greedy and beam search vary too.
        if self.grammar is not None:
            self.prompts = [("held-out", p) for p in self.grammar.prompts(e.heldout_prompts, e.grammar_prompt_tokens)]
        else:
            heldout = _sampled_windows(corpus.val, e.prompt_tokens, e.heldout_prompts, seed + 2) \
                if e.heldout_prompts else torch.zeros(0, e.prompt_tokens, dtype=torch.long)
            self.prompts = [("held-out", row.tolist()) for row in heldout]
        self.prompts += [("prompt", tokenizer.encode(p, add_special_tokens=False)) for p in e.prompts]
        self.attention_ids = tokenizer.encode(e.attention_prompt, add_special_tokens=False)[: cfg.model.block_size]

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

    def extraction(self, model, windows: torch.Tensor) -> tuple[float, float]:
        """(share of windows whose greedy suffix is exact, mean share of suffix tokens matched)."""
        p, n = self.cfg.eval.prefix_tokens, self.cfg.eval.suffix_tokens
        greedy = dict(do_sample=False, num_beams=1, max_new_tokens=n)
        out = []
        for batch in windows.split(self.cfg.eval.batch_size):
            # eos_token_id=[]: decode all n tokens; the true suffix may contain end-of-text too.
            new = generate(model, batch[:, :p], greedy, eos_token_id=[]).new_tokens.cpu()
            out.append(new == batch[:, p:])
        match = torch.cat(out).float()  # [windows, suffix]
        return float((match.mean(1) == 1).float().mean()), float(match.mean())

    def losses(self, model) -> dict:
        bs = self.cfg.eval.batch_size
        row = self._loss_keys("train", window_stats(model, self.train_windows, bs)[0], self.train_windows)
        row.update(self._loss_keys("val", window_stats(model, self.val_windows, bs)[0], self.val_windows))
        row["gap"] = row["val/loss"] - row["train/loss"]
        return row

    def memorization(self, model) -> dict:
        bs = self.cfg.eval.batch_size
        train_loss, train_hits = window_stats(model, self.mia_train, bs)
        val_loss, val_hits = window_stats(model, self.mia_val, bs)
        row = {
            "mem/exact_match_train": float(train_hits.mean()),
            "mem/exact_match_val": float(val_hits.mean()),
            "mem/mia_auc": mia_auc(train_loss.numpy(), val_loss.numpy()),
        }
        row["mem/extraction_rate_train"], row["mem/suffix_match_train"] = self.extraction(model, self.extract_train)
        row["mem/extraction_rate_val"], row["mem/suffix_match_val"] = self.extraction(model, self.extract_val)
        row.update(canary_exposures(model, self.corpus.canaries, self.tokenizer, self.corpus.eot_id,
                                    self.cfg.eval.canary_candidates, self.cfg.data.split_seed))
        return row

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
            ids[i, longest - len(prompt):] = torch.tensor(prompt)
            mask[i, longest - len(prompt):] = 1
        row, samples = {}, []
        for name, setting in self.decoding.items():
            # On the grammar a sample goes on past end-of-text, so that it holds several whole sentences.
            gen = generate(model, ids, setting, attention_mask=mask, seed=self.cfg.seed * 1_000_003 + step,
                           eos_token_id=[] if self.grammar is not None else eot)
            new = gen.new_tokens.cpu().numpy()
            per_prompt = new.shape[0] // len(self.prompts)
            completions, sentences = [], []
            for r, tokens in enumerate(new):
                source, prompt = self.prompts[r // per_prompt]
                whole = tokens  # [new]; on the grammar it runs on past end-of-text
                end = np.flatnonzero(tokens == eot)
                tokens = tokens[: end[0]] if len(end) else tokens
                completions.append(tokens)
                length, _ = self.index.longest_copy(tokens)
                novel = self.index.novelty([tokens], 8)
                shown = tokens
                if self.grammar is not None:
                    sentences += complete_sentences(prompt, whole.tolist(), eot)
                    shown = whole
                samples.append(Sample(step, name, setting_params(setting), source, self.tokenizer.decode(prompt),
                                      self.tokenizer.decode(shown), novel, length,
                                      self.index.has_copy(tokens)))
            row.update(self.copy_metrics(name, completions))
            if self.grammar is not None:
                row.update(self.grammar.shares(name, sentences))
        return row, samples

    def copy_metrics(self, name: str, completions: list[np.ndarray]) -> dict:
        row = {}
        for n in range(1, self.cfg.eval.max_ngram + 1):
            novel = self.index.novelty(completions, n)
            if novel is not None:
                row[f"gen/{name}/novel_{n}gram"] = novel
        copies = [self.index.longest_copy(c) for c in completions]
        best = max(range(len(copies)), key=lambda i: copies[i][0])
        length, start = copies[best]
        row[f"gen/{name}/longest_copy_tokens"] = length
        row[f"gen/{name}/longest_copy_chars"] = len(self.tokenizer.decode(completions[best][start:start + length]))
        row[f"gen/{name}/copy_rate"] = float(np.mean([self.index.has_copy(c) for c in completions]))
        return row

    def attention(self, model) -> tuple[dict, dict]:
        """Per-head entropy of the fixed prompt's attention, and its pictures (matplotlib figures)."""
        from gptfit.plots.attention import heatmap_grid, line_diagram
        from gptfit.core.attention import attention_maps, head_entropy

        maps = attention_maps(model, torch.tensor(self.attention_ids))
        entropy = head_entropy(maps)
        row = {f"attn/l{l}h{h}/entropy": float(entropy[l, h]) for l in range(maps.shape[0]) for h in range(maps.shape[1])}
        labels = [repr(self.tokenizer.decode([t]))[1:-1] for t in self.attention_ids]
        figures = {"attention/heatmaps": heatmap_grid(maps, labels),
                   "attention/lines": line_diagram(maps, labels, layer=maps.shape[0] - 1)}
        return row, figures

    def __call__(self, model, step: int, final: bool = False) -> tuple[dict, list[Sample]]:
        """One evaluation's metrics row and samples; the costly parts only every k-th time and at the end."""
        row = self.losses(model)
        samples: list[Sample] = []
        # The k-th evaluation by step, not by count, so that a resumed run keeps the same cadence.
        index = step // self.cfg.train.eval_every
        if final or index % self.cfg.eval.memorization_every == 0:
            row.update(self.memorization(model))
        if final or index % self.cfg.eval.generation_every == 0:
            if self.grammar is not None:
                row.update(self.grammar.nll(model))
            gen_row, samples = self.samples(model, step)
            row.update(gen_row)
        return row, samples
