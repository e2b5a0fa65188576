"""How the report writes a figure pooled over seeds, in every table: `mean ± sd [lo, hi]`.

The mean over the runs; `± sd` (their sample standard deviation) only where there are several; `[lo, hi]`, the
mean of the runs' own 95% bounds, where they have them; whole numbers (digits=0) with thousands separators;
a dash where no run has the figure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

NONE = "–"


def numbers(values: Iterable) -> list[float]:
    """The values that are numbers (not None, not NaN), as floats."""
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
            out.append(float(v))
    return out


def mean_sd(values: Iterable, digits: int = 3, lows: Iterable = (), highs: Iterable = ()) -> str:
    xs, lo, hi = numbers(values), numbers(lows), numbers(highs)
    if not xs:
        return NONE
    spec = f",.{digits}f" if digits == 0 else f".{digits}f"
    text = format(statistics.mean(xs), spec)
    if len(xs) > 1:
        text += f" ± {format(statistics.stdev(xs), spec)}"
    if lo and hi:
        text += f" [{format(statistics.mean(lo), spec)}, {format(statistics.mean(hi), spec)}]"
    return text
