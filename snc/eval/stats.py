"""Honest uncertainty for test errors: bootstrap over test images, and t intervals over seeds.

- :func:`error_interval`: percentile bootstrap interval of a top-1 error (%) from per-image
  correctness.
- :func:`mce_interval`: intervals of mCE, each corruption's error and (ImageNet) relative mCE.
  Row ``i`` of every corrupted set is a corrupted copy of clean test image ``i``, so a bootstrap
  replicate draws the clean indices ONCE and uses the SAME indices in every corrupted set (and
  in the clean set): the replicate is "another test set of images", each seen under every
  corruption. Sets of another length than the clean one are not copies of the same images and
  are refused (``ValueError``); no independent per-set resampling is done behind the caller's
  back. The mCE formulas are those of :mod:`snc.eval.robustness` (``corruption_metrics``),
  called on arrays of replicate errors.
- :func:`paired_difference` / :func:`mce_difference`: ``a - b`` in points over the same images,
  both resampled with the same indices.
- :func:`seed_summary` / :func:`seed_difference`: mean, sample std, and a Welch t interval of a
  difference of means over seeds.

Per-image arrays are ``bool[N]`` (one run) or ``bool[S, N]`` (S runs of one setting, seeds,
evaluated on the same N images: the per-image error is averaged over the seeds, so the value is
the mean of the seeds' errors and the interval covers the choice of test images only).

The bootstrap index stream is ``np.random.default_rng(seed).integers(0, n, (rows, n))`` drawn
in chunks of rows; :func:`bootstrap_indices` returns exactly the stream the interval functions
use, so any of them with the same ``seed`` resamples the same images.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, Mapping, Sequence, Tuple

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
CHUNK_ELEMENTS = 1 << 22  # indices generated at once (4M int64: 32 MB), whatever n x resamples


def grid_rows(per_image: Mapping[str, np.ndarray], shift: str
              ) -> Dict[Tuple[str, int], np.ndarray]:
    """``{(corruption, severity): rows}`` of corruption-grid ``shift`` from per-image results
    keyed as ``per_image.npz`` keys them (``<shift>/<corruption>/s<k>``); other keys are
    ignored."""
    out = {}
    for key, rows in per_image.items():
        parts = key.split("/")
        if (len(parts) == 3 and parts[0] == shift and parts[2][:1] == "s"
                and parts[2][1:].isdigit()):
            out[(parts[1], int(parts[2][1:]))] = rows
    return out


def _chunk_rows(n: int, resamples: int) -> int:
    return max(1, min(resamples, CHUNK_ELEMENTS // max(n, 1)))


def _index_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The replicate indices, ``(rows, n)`` int64 blocks whose rows add up to ``resamples``."""
    if n < 1:
        raise ValueError("bootstrap of an empty set")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    rows = _chunk_rows(n, resamples)
    done = 0
    while done < resamples:
        k = min(rows, resamples - done)
        yield rng.integers(0, n, size=(k, n), dtype=np.int64)
        done += k


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` indices of the bootstrap replicates (the stream the interval functions
    use; they never hold it whole when ``n x resamples`` is large)."""
    return np.concatenate(list(_index_chunks(n, resamples, seed)), axis=0)


def _count_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each image is drawn in each replicate: ``(rows, n)`` float64 blocks. A sum
    weighted by these counts is the sum over the replicate's drawn images (exactly: integers)."""
    for idx in _index_chunks(n, resamples, seed):
        rows = idx.shape[0]
        flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _wrong(correct: np.ndarray, name: str = "correct", n: int = None) -> np.ndarray:
    """Per-image wrong fraction ``float[N]`` from ``bool[N]`` or ``bool[S, N]`` correctness."""
    correct = np.asarray(correct)
    if correct.dtype != np.bool_:
        raise ValueError(f"{name}: per-image correctness must be a bool array, got "
                         f"{correct.dtype}")
    if correct.ndim == 2:
        if correct.shape[0] < 1:
            raise ValueError(f"{name}: no runs")
        wrong = (~correct).mean(axis=0)
    elif correct.ndim == 1:
        wrong = (~correct).astype(np.float64)
    else:
        raise ValueError(f"{name}: expected bool[N] or bool[runs, N], got shape {correct.shape}")
    if wrong.size == 0:
        raise ValueError(f"{name}: empty")
    if n is not None and wrong.size != n:
        raise ValueError(f"{name}: {wrong.size} images, the clean set has {n}: the sets are "
                         "not copies of the same images, so they cannot be resampled together")
    return wrong


def _replicate_errors(wrongs: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, k)`` errors (%) of ``k`` per-image wrong vectors (``wrongs``: ``(n, k)``),
    every column resampled with the same indices."""
    n = wrongs.shape[0]
    out = [counts @ wrongs for counts in _count_chunks(n, resamples, seed)]
    return 100.0 * np.concatenate(out, axis=0) / n


def _percentiles(values: np.ndarray, level: float) -> Tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = np.percentile(values, [50.0 * (1 - level), 50.0 * (1 + level)], axis=0)
    return float(lo), float(hi)


def error_interval(correct: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> Tuple[float, float]:
    """Percentile bootstrap interval (%) of the top-1 error of per-image ``correct``."""
    wrong = _wrong(correct)
    return _percentiles(_replicate_errors(wrong[:, None], resamples, seed)[:, 0], level)


def _metric_arrays(clean: np.ndarray, corrupted: Mapping[Tuple[str, int], np.ndarray],
                   protocol: str, resamples: int, seed: int, benchmark=None
                   ) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """Point metrics of the full data and the same metrics per replicate (paired indices)."""
    from snc.eval.robustness import corruption_metrics, mce_benchmark  # the one copy

    if protocol not in ("cifar", "imagenet"):
        raise ValueError(f"protocol must be 'cifar' or 'imagenet', got {protocol!r}")
    if not corrupted:
        raise ValueError("no corrupted sets")
    clean_wrong = _wrong(clean, "clean")
    n = clean_wrong.size
    keys = list(corrupted)
    benchmark = mce_benchmark([c for c, _ in keys]) if benchmark is None else benchmark
    wrongs = np.stack([clean_wrong] + [_wrong(corrupted[k], f"corrupted {k}", n) for k in keys],
                      axis=1)
    point_errors = 100.0 * wrongs.sum(axis=0) / n
    reps = _replicate_errors(wrongs, resamples, seed)
    clean_point = float(point_errors[0]) if protocol == "imagenet" else None
    point = corruption_metrics({k: float(e) for k, e in zip(keys, point_errors[1:],
                                                             strict=True)},
                               protocol, clean_point, benchmark)
    point["clean/error"] = float(point_errors[0])
    rep = corruption_metrics({k: reps[:, j + 1] for j, k in enumerate(keys)}, protocol,
                             reps[:, 0] if protocol == "imagenet" else None, benchmark)
    rep["clean/error"] = reps[:, 0]
    return point, rep


def _interval_keys(metrics: Mapping[str, object]) -> list:
    return [k for k in metrics if k in ("mce", "relative_mce", "clean/error")
            or (k.startswith("corruption/") and k.count("/") == 2 and k.endswith("/error"))]


def mce_interval(clean: np.ndarray, corrupted: Mapping[Tuple[str, int], np.ndarray], *,
                 protocol: str = "cifar", resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> Dict[str, Tuple[float, float]]:
    """Intervals of ``mce`` (the 15 benchmark corruptions of -C, or every corruption of a set
    without them such as -C-bar: :func:`~snc.eval.robustness.mce_benchmark`), each
    ``corruption/<c>/error``, ``clean/error`` and, for ``protocol='imagenet'``,
    ``relative_mce``; ``corrupted[(c, s)][i]`` is a corrupted copy of clean image ``i``.

    Raises:
        ValueError: empty or non-bool arrays, or a corrupted set whose length differs from the
            clean one (not copies of the same images).
    """
    _, rep = _metric_arrays(clean, corrupted, protocol, resamples, seed)
    return {k: _percentiles(np.asarray(rep[k]), level) for k in _interval_keys(rep)}


def _difference(point_a: float, point_b: float, reps: np.ndarray, level: float) -> Dict:
    low, high = _percentiles(reps, level)
    return {"diff": float(point_a - point_b), "low": low, "high": high,
            "contains_zero": bool(low <= 0.0 <= high), "level": level}


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, *,
                      resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Dict:
    """``error(a) - error(b)`` in points with a paired bootstrap interval: both resampled with
    the same image indices. ``{"diff", "low", "high", "contains_zero", "level"}``; a negative
    ``diff`` means ``a`` makes fewer errors."""
    wa = _wrong(correct_a, "correct_a")
    wb = _wrong(correct_b, "correct_b", wa.size)
    reps = _replicate_errors(np.stack([wa, wb], axis=1), resamples, seed)
    n = wa.size
    return _difference(100.0 * wa.sum() / n, 100.0 * wb.sum() / n, reps[:, 0] - reps[:, 1],
                       level)


def mce_difference(clean_a: np.ndarray, corrupted_a: Mapping[Tuple[str, int], np.ndarray],
                   clean_b: np.ndarray, corrupted_b: Mapping[Tuple[str, int], np.ndarray], *,
                   metric: str = "mce", protocol: str = "cifar", resamples: int = RESAMPLES,
                   seed: int = 0, level: float = LEVEL) -> Dict:
    """``metric(a) - metric(b)`` (``mce`` by default) with a paired bootstrap interval: one set
    of image indices per replicate for both models and every corrupted set."""
    if set(corrupted_a) != set(corrupted_b):
        raise ValueError("the two models were evaluated on different corrupted sets: "
                         f"{sorted(set(corrupted_a) ^ set(corrupted_b))}")
    n = _wrong(clean_a, "clean_a").size
    _wrong(clean_b, "clean_b", n)
    # same n and same seed: the same replicate indices for a, b and every corrupted set
    pa, ra = _metric_arrays(clean_a, corrupted_a, protocol, resamples, seed)
    pb, rb = _metric_arrays(clean_b, corrupted_b, protocol, resamples, seed)
    if metric not in pa or metric not in pb:
        raise ValueError(f"{metric!r} needs all 15 benchmark corruptions (and protocol "
                         "'imagenet' for relative_mce)")
    return _difference(pa[metric], pb[metric], np.asarray(ra[metric]) - np.asarray(rb[metric]),
                       level)


def _floats(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: no values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite, got {list(values)}")
    return arr


def seed_summary(values: Sequence[float]) -> Dict:
    """``{"mean", "std" (sample, ddof=1; None for one value), "n"}`` of per-seed values."""
    arr = _floats(values, "values")
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "n": int(arr.size)}


def seed_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Dict:
    """``mean(a) - mean(b)`` with a Welch t interval (unequal variances, Welch-Satterthwaite
    degrees of freedom). ``{"diff", "low", "high", "contains_zero", "n_a", "n_b", "df",
    "level"}``. Both need >= 2 values. When both samples have zero variance the interval is the
    point itself (``df`` None): there is no spread to widen it."""
    from scipy import stats

    xa, xb = _floats(a, "a"), _floats(b, "b")
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"a Welch interval needs >= 2 values each, got {xa.size} and "
                         f"{xb.size}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = float(xa.mean() - xb.mean())
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        low = high = diff
        df = None
    else:
        df = float((va + vb) ** 2 / (va ** 2 / (xa.size - 1) + vb ** 2 / (xb.size - 1)))
        half = float(stats.t.ppf(0.5 * (1 + level), df)) * se
        low, high = diff - half, diff + half
    return {"diff": diff, "low": low, "high": high, "contains_zero": bool(low <= 0.0 <= high),
            "n_a": int(xa.size), "n_b": int(xb.size), "df": df, "level": level}
