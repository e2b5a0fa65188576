"""The lower bound on epsilon of a privacy audit in one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

m audit sequences are each included in training independently with probability 1/2. After training the
auditor scores them, guesses "in" for the k+ highest scores and "out" for the k- lowest, and abstains on the
rest: r = k+ + k- guesses, v of them correct. Under (epsilon, delta)-DP the number correct is dominated by a
binomial, so a v that is too large for a given epsilon refutes it:
    q = e^eps / (1 + e^eps),  beta = P[Bin(r, q) >= v],
    alpha = max over i = 1..v of (1 / i) P[v - i <= Bin(r, q) < v],
    p(eps) = min(1, beta + alpha * 2 m delta),
and the lower bound is the largest epsilon whose p-value is below the significance (0.05): at 95%
confidence the training run was not (epsilon', delta)-DP for any epsilon' below it. k+ and k- must be fixed
before the scores are seen (they are config here), or the confidence no longer holds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

SIGNIFICANCE = 0.05


def p_value(eps: float, r: int, v: int, m: int, delta: float) -> float:
    """The chance of `v` or more correct of `r` guesses on `m` audit sequences under (eps, delta)-DP."""
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(1.0, beta)
    below = binom.cdf(v - 1, r, q) - binom.cdf(v - 1 - np.arange(1, v + 1), r, q)  # [v] P[v - i <= Bin < v]
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, beta + alpha * 2 * m * delta)


def epsilon_lower_bound(r: int, v: int, m: int, delta: float, significance: float = SIGNIFICANCE) -> float:
    """The largest epsilon that `v` correct of `r` guesses refute at `significance` (0 when none is)."""
    if r == 0 or p_value(0.0, r, v, m, delta) >= significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(hi, r, v, m, delta) < significance and hi < 1e3:  # bracket by doubling
        lo, hi = hi, 2 * hi
    for _ in range(60):  # then bisect: p rises with eps
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(mid, r, v, m, delta) < significance else (lo, mid)
    return lo


def guesses(scores: np.ndarray, included: np.ndarray, k_in: int, k_out: int) -> tuple[int, int]:
    """(r, v): "in" for the k_in highest scores, "out" for the k_out lowest; how many guesses, how many right."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")  # [m] the highest first
    included = np.asarray(included, dtype=bool)[order]
    right = int(included[:k_in].sum()) + int((~included[len(order) - k_out :]).sum())  # [m:] is empty: 0
    return k_in + k_out, right
