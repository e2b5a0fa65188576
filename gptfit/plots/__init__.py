"""Figures of a run, drawn with matplotlib. Agg is chosen here, once, so that no screen is needed.

curves.py: losses and memorization against tokens seen; attention.py: attention maps; decoding.py:
the transforms, the greedy path and the beam tree. `finish` is the one ending of a figure with one pair of
axes: its labels, grid and legend, written to its file.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def finish(
    fig, ax, title: str, x_label: str, y_label: str, path: Path, title_size: float | None = None, legend_size: float = 7
) -> Path:
    """A figure's labels, grid and legend, written to `path`, and the figure closed."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
