"""data=grammar: the model set against the grammar that generated its corpus, at the generation cadence.

The NLL of held-out sentences under the model and under the grammar, and every complete sentence of
the samples (measures/generation.py decodes them, from held-out sentence starts: `GrammarProbe.prompts`)
classified as copied from training, novel and valid, or invalid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gptfit.config import EvalConfig, GrammarConfig
from gptfit.config.grammar import spec_of
from gptfit.data.corpus import Corpus
from gptfit.data.grammar import Grammar, classify
from gptfit.measures.base import Evaluation, Measure, Setup, When
from gptfit.metrics.scoring import score_sequences


def complete_sentences(prompt: Sequence[int], new: Sequence[int], eot: int) -> list[list[int]]:
    """The documents of prompt + new known whole: each starts right after an end-of-text token (in the
    prompt or the new tokens) and is ended by one among the new tokens. A first stretch whose start the
    prompt cut off, and the unfinished tail, are left out."""
    ids = [*prompt, *new]
    ends = [i for i, t in enumerate(ids) if t == eot]
    return [ids[a + 1 : b] for a, b in zip(ends, ends[1:]) if b >= len(prompt)]


def sentence_nll(model, sentences: list[list[int]], eot: int, batch_size: int) -> np.ndarray:
    """[n] nats: each sentence's tokens and the end-of-text token after it, from a context of one
    end-of-text token (the start of a document), summed."""
    documents = [[eot, *tokens, eot] for tokens in sentences]
    return score_sequences(model, documents, batch_size, pad_id=eot).total().numpy()


def sentence_starts(corpus: Corpus, tokenizer, count: int, length: int) -> list[list[int]]:
    """The samples' prompts on data=grammar: end-of-text and the first `length` tokens of held-out sentences
    (longer than that), all different. Starting from a held-out sentence is what makes greedy and beam
    search vary from prompt to prompt."""
    out: list[list[int]] = []
    for sentence in corpus.val_documents:  # one at a time: the first few sentences usually give them all
        if len(out) == count:
            break
        ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        prompt = [corpus.eot_id, *ids[:length]]
        if len(ids) > length and prompt not in out:
            out.append(prompt)
    return out


class GrammarProbe(Measure):
    """data=grammar: the model against the grammar that generated its corpus.

    - val_nll_model / val_nll_true: mean NLL (nats) of the first `eval.grammar_sentences` held-out
      sentences (those that fit one window) under the model and under the grammar. The model's is the
      NLL of one tokenization of the sentence, an upper bound on its NLL of the string.
    - per decoding setting: the complete sentences of the samples (`complete_sentences`), as shares
      copied (verbatim a sentence of the training set actually used), novel and valid, and invalid.
    """

    keys = (
        "grammar/val_dropped",
        "grammar/val_nll_model",
        "grammar/val_nll_true",
        "grammar/<name>/sentences",
        "grammar/<name>/copied",
        "grammar/<name>/novel_valid",
        "grammar/<name>/invalid",
    )
    when = When.SAMPLES

    def __init__(self, grammar: GrammarConfig, eval: EvalConfig, block_size: int, corpus: Corpus, tokenizer):
        self.grammar = Grammar(spec_of(grammar))
        self.training = set(corpus.train_documents)
        self.eot, self.tokenizer, self.batch_size = corpus.eot_id, tokenizer, eval.batch_size
        self.dropped = corpus.val_dropped
        encoded = tokenizer(corpus.val_documents, add_special_tokens=False)["input_ids"]
        # The held-out sentences in split order, with their tokens; scored ones fit a window after end-of-text.
        self.heldout = list(zip(corpus.val_documents, encoded))
        fit = [(s, ids) for s, ids in self.heldout if len(ids) + 1 <= block_size]
        fit = fit[: eval.grammar_sentences]
        self.nll_sentences = [ids for _, ids in fit]
        self.nll_true = float(np.mean([-self.grammar.logprob(s) for s, _ in fit])) if fit else None

    def nll(self, model) -> dict:
        row = {"grammar/val_dropped": self.dropped}
        if self.nll_sentences:
            row["grammar/val_nll_model"] = float(
                sentence_nll(model, self.nll_sentences, self.eot, self.batch_size).mean()
            )
            row["grammar/val_nll_true"] = self.nll_true
        return row

    def shares(self, name: str, prompts: Sequence[Sequence[int]], new: np.ndarray) -> dict:
        """Of the complete sentences of each prompt and its sample (`new`: [samples, new tokens], one
        prompt each): the shares copied / novel_valid / invalid (left out when none was complete), and
        the count."""
        sentences = [
            s for prompt, tokens in zip(prompts, new) for s in complete_sentences(prompt, tokens.tolist(), self.eot)
        ]
        counts = classify([self.tokenizer.decode(ids) for ids in sentences], self.training, self.grammar)
        row = {f"grammar/{name}/sentences": counts["n"]}
        if counts["n"]:
            row.update({f"grammar/{name}/{k}": counts[k] for k in ("copied", "novel_valid", "invalid")})
        return row

    def __call__(self, ev: Evaluation) -> dict:
        row = self.nll(ev.model)
        for name, (prompts, new) in ev.decoded.items():
            row.update(self.shares(name, prompts, new))
        return row


def build(setup: Setup) -> GrammarProbe | None:
    if setup.grammar is None:
        return None
    return GrammarProbe(setup.grammar, setup.eval, setup.block_size, setup.corpus, setup.tokenizer)
