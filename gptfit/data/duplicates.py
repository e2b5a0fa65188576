"""Planted text: sequences of held-aside text inserted into the training text a chosen number of times.
- The duplication ladder (data.duplicates): memorization against the number of copies (Carlini et al.
  2022; Kandpal et al. 2022).
- Forgetting (data.forget): sequences seen only up to a step, then never again (Tirumala et al. 2022);
  the training windows of later steps avoid their copies (gptfit.data.windows).

The held-aside text is a share of the training pool's documents, taken away before the tokenizer is
trained (by `data.split_seed`), so it is never in the tokenizer's text, the training text or the
validation set. It is cut into non-overlapping sequences of L = eval.prefix_tokens + eval.suffix_tokens
tokens: `per_count` for each count, and `per_count` more that are never planted (count 0, the
baseline). Each planted sequence goes in `count` times, each time as a document of its own (followed
by end-of-text) after a seeded end-of-text of the training text, on top of its `data.train_tokens`.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np

from gptfit.errors import UserError


@dataclass
class Planted:
    """One group of sequences planted the same number of times."""

    copies: int
    tokens: np.ndarray  # [n, L]
    positions: list[list[int]]  # per sequence, where each of its copies starts in the final training stream


# Characters held aside per token needed: byte-level BPE takes 3 to 4.5 characters of English or code per
# token, so 6 leaves room; `cut` says so in one line if it still falls short.
CHARS_PER_TOKEN = 6


def hold_aside(pool: list[str], split_seed: int, tokens: int) -> tuple[list[str], list[str]]:
    """(the pool without the held-aside documents, the held-aside documents): whole documents drawn
    from `split_seed`, enough for about `tokens` tokens."""
    order = list(range(len(pool)))
    random.Random(f"aside:{split_seed}").shuffle(order)
    budget, held, aside = CHARS_PER_TOKEN * tokens, 0, set()
    for i in order:
        if held >= budget or len(aside) == len(pool) - 1:
            break
        aside.add(i)
        held += len(pool[i])
    return [d for i, d in enumerate(pool) if i not in aside], [pool[i] for i in order if i in aside]


def cut(stream: np.ndarray, length: int, counts: list[int], per_count: int) -> dict[int, np.ndarray]:
    """{count: [per_count, length] sequences}, count 0 included, from non-overlapping windows of `stream`."""
    groups = [0, *counts]
    needed = len(groups) * per_count
    available = len(stream) // length
    if available < needed:
        raise UserError(
            f"data.duplicates: {needed} sequences of {length} tokens are needed ({per_count} for each of "
            f"the counts and for count 0), but the held-aside text holds {available}; lower "
            "data.duplicates.per_count or use a larger corpus"
        )
    windows = np.asarray(stream[: needed * length], dtype=np.int64).reshape(needed, length)
    return {count: windows[g * per_count : (g + 1) * per_count] for g, count in enumerate(groups)}


def take(stream: np.ndarray, length: int, first: int, n: int, what: str) -> np.ndarray:
    """[n, length]: the held-aside sequences `first` .. `first + n - 1` (those before went to other uses)."""
    available = len(stream) // length - first
    if available < n:
        raise UserError(
            f"{what}: {n} sequences of {length} tokens are needed, but the held-aside text holds "
            f"{max(available, 0)} more; lower it or use a larger corpus"
        )
    return np.asarray(stream[first * length : (first + n) * length], dtype=np.int64).reshape(n, length)


def spans(n_tokens: int, groups: list[Planted], length: int) -> np.ndarray:
    """[tokens] True where a planted copy (and its end-of-text) lies in the training stream."""
    mask = np.zeros(n_tokens, dtype=bool)
    for group in groups:
        for positions in group.positions:
            for p in positions:
                mask[p : p + length + 1] = True
    return mask


def plant(
    train: np.ndarray, groups: list[tuple[int, np.ndarray]], eot_id: int, seed: int
) -> tuple[np.ndarray, list[Planted]]:
    """The training stream with every sequence of each (copies, [n, L] sequences) group inserted `copies`
    times, all in one pass; where each copy landed, a Planted per group in the order given."""
    boundaries = np.flatnonzero(train == eot_id) + 1
    if len(boundaries) == 0:
        boundaries = np.array([0])
    rng = np.random.default_rng(zlib.crc32(f"duplicates:{seed}".encode()))
    inserts = []  # (position in the original stream, group, sequence)
    for g, (copies, sequences) in enumerate(groups):
        for j in range(len(sequences)):
            inserts += [(int(pos), g, j) for pos in rng.choice(boundaries, size=copies)]
    inserts.sort()
    pieces, last, shift = [], 0, 0
    positions = [[[] for _ in sequences] for _, sequences in groups]
    for pos, g, j in inserts:
        copy = np.append(groups[g][1][j], eot_id)  # the sequence and its end-of-text
        pieces += [train[last:pos], copy]
        positions[g][j].append(pos + shift)
        shift += len(copy)
        last = pos
    pieces.append(train[last:])
    planted = [Planted(copies, sequences, positions[g]) for g, (copies, sequences) in enumerate(groups)]
    return np.concatenate(pieces), planted
