"""Figures: corruption x severity error heatmap, grouped metric bars, mCE vs published bars.

Readability rules: legends sit outside the axes (right of the plot), bars carry their values as
direct labels, and bars of synthetic-data or generated-corrupted-set runs are hatched and say
so in the legend. Every function writes exactly one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from snc.corruptions import ALL_CORRUPTIONS, CORRUPTIONS

HATCH = "//"
MARKED_LABEL = "hatched: synthetic data or generated corrupted set"
COLORS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def corruption_grid(runs: Sequence[Dict]) -> Tuple[List[str], List[List[float]]]:
    """Corruption names (the 15 in paper order, then any extra ones present) and the mean error
    (%) over ``runs`` per corruption and severity 1-5; empty when no run has them."""
    names = [c for c in ALL_CORRUPTIONS
             if all(f"corruption/{c}/s{s}/error" in r for r in runs for s in range(1, 6))]
    names = [c for c in CORRUPTIONS if c in names] + [c for c in names if c not in CORRUPTIONS]
    grid = [[sum(float(r[f"corruption/{c}/s{s}/error"]) for r in runs) / len(runs)
             for s in range(1, 6)] for c in names]
    return names, grid


def heatmap(results: Dict, path: Path, title: Optional[str] = None,
            runs: Optional[Sequence[Dict]] = None) -> Path:
    """Corruption x severity error heatmap (%), annotated: of one run's ``results`` or the mean
    of ``runs`` (seeds of one setting)."""
    import numpy as np

    plt = _pyplot()
    runs = list(runs) if runs else [results]
    names, grid = corruption_grid(runs)
    if not names:
        raise ValueError("no corruption/<name>/s<k>/error keys to plot")
    grid = np.array(grid)
    fig, ax = plt.subplots(figsize=(6, 0.38 * len(names) + 1.6))
    im = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[i, j] > 55 else "black")
    ax.set_xticks(range(5), [f"s{s}" for s in range(1, 6)])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("severity")
    ax.set_title(title or f"{results.get('backbone')} {results.get('method')}: "
                 f"mCE {results.get('mce', float('nan')):.1f}%", fontsize=9)
    fig.colorbar(im, ax=ax, label="error (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


Err = Optional[object]  # a std over seeds (float), a (low, high) interval, or None


def yerr(means: Sequence[Optional[float]], errs: Sequence[Err]) -> Optional[List[List[float]]]:
    """Matplotlib's ``yerr`` (2 x n: below, above) from per-bar errors: a float is a std over
    seeds (symmetric), a ``(low, high)`` pair a 95 % interval (asymmetric); None: no bar.
    None when no bar has one."""
    below, above = [], []
    for m, e in zip(means, errs, strict=True):
        if m is None or e is None:
            below.append(0.0)
            above.append(0.0)
        elif isinstance(e, (tuple, list)):
            below.append(max(0.0, m - float(e[0])))
            above.append(max(0.0, float(e[1]) - m))
        else:
            below.append(float(e))
            above.append(float(e))
    return [below, above] if any(below) or any(above) else None


def _value_labels(ax, bars, values: Sequence[Optional[float]], fontsize: int = 7) -> None:
    for bar, value in zip(bars, values, strict=True):
        if value is not None:
            ax.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=fontsize)


def _legend_outside(ax, extra_handles=()) -> None:
    handles, labels = ax.get_legend_handles_labels()
    for h in extra_handles:
        handles.append(h)
        labels.append(h.get_label())
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, frameon=False)


def _marked_handle(text: str = MARKED_LABEL):
    from matplotlib.patches import Patch

    return Patch(facecolor="white", edgecolor="black", hatch=HATCH, label=text)


def metric_bars(labels: Sequence[str], series: Dict[str, Tuple[Sequence[Optional[float]],
                                                               Sequence[Optional[float]]]],
                marked: Sequence[bool], path: Path, title: str = "",
                ylabel: str = "%") -> Path:
    """Grouped bars: one group per setting (``labels``), one bar per metric of ``series``
    (``{legend label: (means, errs)}``), error bars = std over seeds or a 95 % interval
    (see :func:`yerr`), values on the bars."""
    plt = _pyplot()
    n_series = max(1, len(series))
    width = 0.8 / n_series
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) * n_series ** 0.5 + 3.5), 4))
    for k, (name, (means, stds)) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(labels))]
        heights = [m if m is not None else 0.0 for m in means]
        bars = ax.bar(xs, heights, width * 0.92, yerr=yerr(means, stds),
                      color=COLORS[k % len(COLORS)], label=name, capsize=2,
                      hatch=None, edgecolor="black", linewidth=0.4)
        for bar, is_marked in zip(bars, marked, strict=True):
            if is_marked:
                bar.set_hatch(HATCH)
        _value_labels(ax, bars, means)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0,
                  ha="right" if len(labels) > 3 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max([1.0] + [m for means, _ in series.values() for m in means
                                if m is not None]) * 1.15)
    ax.set_title(title, fontsize=9)
    _legend_outside(ax, [_marked_handle()] if any(marked) else [])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def mce_bars(labels: Sequence[str], ours: Sequence[float], published: Sequence[Optional[float]],
             path: Path, marked: Optional[Sequence[bool]] = None,
             stds: Optional[Sequence[Err]] = None,
             marked_label: str = MARKED_LABEL) -> Path:
    """mCE per paper cell: this framework's bars (values on top, std over seeds or a 95 %
    interval as error bars, :func:`yerr`; hatched when marked), published values as diamonds;
    legend outside the axes."""
    plt = _pyplot()
    marked = list(marked) if marked is not None else [False] * len(labels)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 3.5), 4))
    xs = list(range(len(labels)))
    errs = yerr(ours, stds) if stds is not None else None
    bars = ax.bar(xs, ours, 0.6, color="#4c72b0", label="this framework", edgecolor="black",
                  linewidth=0.4, yerr=errs, capsize=2)
    for bar, is_marked in zip(bars, marked, strict=True):
        if is_marked:
            bar.set_hatch(HATCH)
    _value_labels(ax, bars, ours)
    px = [x for x, p in zip(xs, published, strict=True) if p is not None]
    py = [p for p in published if p is not None]
    if py:
        ax.scatter(px, py, color="#dd8452", zorder=3, label="published", marker="D",
                   edgecolor="black", linewidth=0.4)
    ax.set_xticks(xs, labels, rotation=45 if len(labels) > 2 else 0,
                  ha="right" if len(labels) > 2 else "center", fontsize=8)
    ax.set_ylabel("mCE (%)")
    ax.set_ylim(0, max([1.0, *ours, *py]) * 1.15)
    _legend_outside(ax, [_marked_handle(marked_label)] if any(marked) else [])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
