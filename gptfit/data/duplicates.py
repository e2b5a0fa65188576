"""The duplication ladder: sequences of held-aside text planted into the training text a chosen number of
times each (data.duplicates), to measure memorization against the number of copies (Carlini et al. 2022;
Kandpal et al. 2022).

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
        raise UserError(f"data.duplicates: {needed} sequences of {length} tokens are needed ({per_count} for each of "
                        f"the counts and for count 0), but the held-aside text holds {available}; lower "
                        "data.duplicates.per_count or use a larger corpus")
    windows = np.asarray(stream[: needed * length], dtype=np.int64).reshape(needed, length)
    return {count: windows[g * per_count : (g + 1) * per_count] for g, count in enumerate(groups)}


def plant(train: np.ndarray, groups: dict[int, np.ndarray], eot_id: int, seed: int) -> tuple[np.ndarray, list[Planted]]:
    """The training stream with every sequence of count c inserted c times; where each copy landed."""
    boundaries = np.flatnonzero(train == eot_id) + 1
    if len(boundaries) == 0:
        boundaries = np.array([0])
    rng = np.random.default_rng(zlib.crc32(f"duplicates:{seed}".encode()))
    inserts = []  # (position in the original stream, group count, sequence index)
    for count, sequences in groups.items():
        for j in range(len(sequences) if count else 0):
            inserts += [(int(pos), count, j) for pos in rng.choice(boundaries, size=count)]
    inserts.sort()
    length = next(iter(groups.values())).shape[1] + 1  # the sequence and its end-of-text
    pieces, last, shift = [], 0, 0
    positions = {(c, j): [] for c, seqs in groups.items() if c for j in range(len(seqs))}
    for pos, count, j in inserts:
        pieces += [train[last:pos], np.append(groups[count][j], eot_id)]
        positions[(count, j)].append(pos + shift)
        shift += length
        last = pos
    pieces.append(train[last:])
    planted = [Planted(c, seqs, [positions[(c, j)] for j in range(len(seqs))]) for c, seqs in groups.items() if c]
    return np.concatenate(pieces), planted
