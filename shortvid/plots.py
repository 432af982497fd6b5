"""Figures more than one layer draws: the confusion heatmap of ``analyze``'s report and of training's
TensorBoard curves. matplotlib comes with the ``report`` extra."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .extras import require


def confusion_figure(matrix: np.ndarray, names: Sequence[str], order: list[int], sizes: list[int]):
    """A matplotlib figure: the heatmap of row-normalised confusions, classes ordered by group, group boundaries
    drawn (``analyze``'s confusion.png; training's TensorBoard image)."""
    require("report", "the confusion heatmap")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix[np.ix_(order, order)].astype(np.float64)
    totals = m.sum(axis=1, keepdims=True)
    rates = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    n = len(order)
    side = min(4 + 0.28 * n, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=max(float(rates.max()), 1e-9))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's row")
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 * rates.max() else "black")
    labels = [names[i] for i in order]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for edge in np.cumsum(sizes)[:-1]:
        ax.axhline(edge - 0.5, color="red", linewidth=1)
        ax.axvline(edge - 0.5, color="red", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusions (diagonal: correct), classes by group")
    fig.tight_layout()
    return fig
