"""data.dedup: exact-substring deduplication of the training stream (Lee et al. 2022, "Deduplicating
Training Data Makes Language Models Better").

The rule, on the stream as planted (canaries, the duplication ladder and the forgotten set in it), with
m = data.dedup.min_tokens: with keep=first, every window of m tokens whose text occurred at an earlier
position is removed, and the earliest occurrence of each text stays. A later copy of a longer repeat is a
run of such windows, one starting at each of its tokens, so it goes whole. With keep=none, every window
whose text occurs at least twice is removed, the first occurrence too, so no copy of a repeat stays: what
Lee et al.'s released tool (deduplicate-text-datasets) does, with its threshold of 50 tokens. No window
holds an end-of-text token, so a repeat never runs from one document into the next (in Lee et al.'s code
each document's separator holds its index, to the same end); the end-of-text itself stays, unless
everything of its document went: then it goes too, so that no empty document is left.

What it guarantees, and what not:
- every window of m tokens without an end-of-text that is kept whole is the first occurrence of its text
  (keep=none: the only occurrence), so no such text occurs twice among the windows that lie inside runs
  of kept tokens;
- a token goes only when a removed window covers it (or it is the end-of-text of a document that went
  whole);
- keep=first: a first occurrence is kept whole unless it overlaps the later occurrence of another text:
  then it loses the overlap, and its text may survive nowhere (the rule looks at windows, not at whole
  repeats);
- removing a stretch joins the text on either side of it, and a window across the join may repeat text
  found elsewhere: the rule is applied once, to the stream as it was, and such new repeats (each one a
  window across a cut) are left in. Lee et al. also strike the repeats in one pass and leave the joins
  ("Alice wantedstore" in their README).
"""

from __future__ import annotations

import numpy as np

from gptfit.config.data import DEDUP_KEEP
from gptfit.data.suffixes import shared_prefixes, suffix_array


def deduplicate(stream: np.ndarray, min_tokens: int, separator: int | None = None, keep: str = "first") -> np.ndarray:
    """[tokens] bool: which tokens of `stream` stay (the rule in the module docstring). separator: the
    end-of-text id, which no repeated span crosses; None: any span repeats. keep: first (the earliest
    occurrence of each repeat stays) or none (every occurrence goes)."""
    if keep not in DEDUP_KEEP:
        raise ValueError(f"keep={keep!r}: one of {', '.join(DEDUP_KEEP)}")
    tokens = np.asarray(stream)
    n, m = len(tokens), min_tokens
    if n <= m:
        return np.ones(n, dtype=bool)
    order = suffix_array(tokens)  # [n] suffix starts, in sorted order
    shared = shared_prefixes(tokens, order)  # [n] tokens in common with the next suffix in that order
    # The suffixes that begin with the same m tokens are a run of ranks joined by shared >= m: a block.
    block = np.concatenate([[0], np.cumsum(shared[:-1] < m)])  # [n] the block of each rank
    firsts = np.flatnonzero(np.diff(block, prepend=-1))  # [blocks] the first rank of each
    if keep == "first":
        earliest = np.minimum.reduceat(order, firsts)[block]  # [n] the earliest start in each rank's block
        starts = order[order != earliest].astype(np.int64)  # starts of windows whose text occurred before
    else:
        sizes = np.diff(np.append(firsts, n))  # [blocks] suffixes in each
        starts = order[sizes[block] > 1].astype(np.int64)  # starts of windows whose text occurs twice or more
    if separator is not None:  # a window with an end-of-text in it is not a repeat
        ends = np.concatenate([[0], np.cumsum(tokens == separator)])  # [n + 1]
        starts = starts[ends[starts + m] == ends[starts]]
    # Each removed window covers [start, start + m): count the windows over each token.
    cover = np.cumsum(np.bincount(starts, minlength=n + 1) - np.bincount(starts + m, minlength=n + 1))  # [n + 1]
    kept = cover[:n] == 0
    if separator is not None:
        kept &= ~emptied(tokens, kept, separator)
    return kept


def emptied(tokens: np.ndarray, kept: np.ndarray, separator: int) -> np.ndarray:
    """[tokens] True at the end-of-text of each non-empty document none of whose tokens is kept."""
    ends = np.flatnonzero(tokens == separator)  # [documents]
    starts = np.concatenate([[0], ends[:-1] + 1])
    before = np.concatenate([[0], np.cumsum(kept)])  # [n + 1] kept tokens before each position
    gone = (ends > starts) & (before[ends] == before[starts])
    out = np.zeros(len(tokens), dtype=bool)
    out[ends[gone]] = True
    return out


def moved(positions: list[list[int]], kept: np.ndarray, length: int) -> list[list[int]]:
    """Where each planted copy of `length` tokens starts in the deduplicated stream: the copies whose every
    token stayed (so the copy is still whole and in one piece), at the count of kept tokens before them."""
    before = np.concatenate([[0], np.cumsum(kept)])  # [n + 1]
    return [[int(before[p]) for p in copies if before[p + length] - before[p] == length] for copies in positions]
