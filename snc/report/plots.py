"""Figures: corruption x severity error heatmap of a run, mCE bar chart of several methods."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

from snc.data.corruptions import CORRUPTIONS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(results: Dict, path: Path, title: Optional[str] = None) -> None:
    """15 x 5 error heatmap (%), annotated, of one run's results."""
    import numpy as np

    plt = _pyplot()
    grid = np.array([[results[f"corruption/{c}/s{s}/error"] for s in range(1, 6)]
                     for c in CORRUPTIONS])
    fig, ax = plt.subplots(figsize=(6, 7))
    im = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[i, j] > 55 else "black")
    ax.set_xticks(range(5), [f"s{s}" for s in range(1, 6)])
    ax.set_yticks(range(len(CORRUPTIONS)), CORRUPTIONS)
    ax.set_title(title or f"{results.get('backbone')} {results.get('method')}: "
                 f"mCE {results.get('mce', float('nan')):.1f}%", fontsize=9)
    fig.colorbar(im, ax=ax, label="error (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mce_bars(labels: Sequence[str], ours: Sequence[float], published: Sequence[Optional[float]],
             path: Path) -> None:
    """mCE per method: this framework's bars, published values as markers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(labels) + 2), 4))
    xs = range(len(labels))
    ax.bar(xs, ours, color="#4c72b0", label="this run")
    px = [x for x, p in zip(xs, published, strict=True) if p is not None]
    py = [p for p in published if p is not None]
    if py:
        ax.scatter(px, py, color="#dd8452", zorder=3, label="published", marker="D")
    ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mCE (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
