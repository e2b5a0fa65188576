"""Figures of a run, drawn with matplotlib. Agg is chosen here, once, so that no screen is needed.

curves.py: losses and memorization against tokens seen; attention.py: attention maps; decoding.py:
the transforms, the greedy path and the beam tree.
"""

import matplotlib

matplotlib.use("Agg")
