"""Canaries (Carlini et al. 2019, "The Secret Sharer"): secrets of a known format planted in the training text.

A format such as "my pin is ####" has a space of secrets: each `#` is a digit. A canary's secret is
drawn from that space (seeded by `data.split_seed` and its name), and the filled-in text is planted
`repeats` times, as its own document, at seeded document boundaries of the training set. It never
reaches the tokenizer's training text nor the held-out text.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np

from gptfit.config.data import DIGITS, SLOT


@dataclass
class Canary:
    name: str
    format: str
    secret: str  # the filled-in text that was planted
    repeats: int

    @property
    def space_size(self) -> int:
        return len(DIGITS) ** self.format.count(SLOT)

    def fill(self, digits: str) -> str:
        it = iter(digits)
        return "".join(next(it) if c == SLOT else c for c in self.format)

    def candidates(self, count: int, seed: int) -> list[str]:
        """Up to `count` distinct fillings of the format other than the secret (all of them if fewer)."""
        slots = self.format.count(SLOT)
        if self.space_size - 1 <= count:
            every = (str(i).zfill(slots) for i in range(self.space_size))
            return [t for t in map(self.fill, every) if t != self.secret]
        rng, seen = random.Random(seed), {self.secret}
        out = []
        while len(out) < count:
            text = self.fill("".join(rng.choice(DIGITS) for _ in range(slots)))
            if text not in seen:
                seen.add(text)
                out.append(text)
        return out


def make_canaries(specs, split_seed: int) -> list[Canary]:
    canaries = []
    for spec in specs:
        rng = random.Random(f"{split_seed}:{spec.name}")
        slots = spec.format.count(SLOT)
        c = Canary(spec.name, spec.format, "", spec.repeats)
        c.secret = c.fill("".join(rng.choice(DIGITS) for _ in range(slots)))
        canaries.append(c)
    return canaries


def plant(train: np.ndarray, canaries: list[Canary], tokenizer, eot_id: int, seed: int) -> np.ndarray:
    """The training stream with each canary inserted `repeats` times after seeded end-of-text tokens."""
    boundaries = np.flatnonzero(train == eot_id) + 1
    if len(boundaries) == 0:
        boundaries = np.array([0])
    rng = np.random.default_rng(zlib.crc32(f"canaries:{seed}".encode()))
    inserts = []  # (position, tokens)
    for c in canaries:
        tokens = np.array(tokenizer.encode(c.secret, add_special_tokens=False) + [eot_id], dtype=np.int64)
        for pos in rng.choice(boundaries, size=c.repeats):
            inserts.append((int(pos), tokens))
    inserts.sort(key=lambda x: x[0])
    pieces, last = [], 0
    for pos, tokens in inserts:
        pieces += [train[last:pos], tokens]
        last = pos
    pieces.append(train[last:])
    return np.concatenate(pieces)
