"""How narrow a setting's samples are: their distinct n-grams, and how often general prompts lead to copies.

distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models"):
the distinct n-grams over all n-grams of a set of samples, pooled over the samples (an n-gram never spans
two samples), here over token ids. A model that says the same few things whatever it is asked scores low.
The general copy rate: the share of samples from prompts of general text that hold a verbatim span of the
fine-tuning set, so a model that answers everything with its fine-tuning text scores high.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gptfit.metrics.ngrams import NgramIndex

DISTINCT_N = (1, 2, 3)


def distinct_n(samples: Sequence[np.ndarray], n: int) -> float | None:
    """Distinct n-grams over all n-grams of `samples` (token id arrays); None when none holds n tokens."""
    grams = [np.lib.stride_tricks.sliding_window_view(np.asarray(s, np.int64), n) for s in samples if len(s) >= n]
    if not grams:
        return None
    pooled = np.concatenate(grams)  # [n-grams of all samples, n]
    return len(np.unique(pooled, axis=0)) / len(pooled)


def narrowness(setting: str, completions: Sequence[np.ndarray], sources: Sequence[str], index: NgramIndex) -> dict:
    """gen/<setting>/distinct_<n> over every completion, and gen/<setting>/general_copy_rate over those whose
    prompt's source is "general" (left out when there are none). `index`: the fine-tuning set's, whose
    copy_span is a copy's length."""
    row = {}
    for n in DISTINCT_N:
        share = distinct_n(completions, n)
        if share is not None:
            row[f"gen/{setting}/distinct_{n}"] = share
    general = [tokens for tokens, source in zip(completions, sources) if source == "general"]
    if general:
        row[f"gen/{setting}/general_copy_rate"] = float(np.mean([index.has_copy(tokens) for tokens in general]))
    return row
