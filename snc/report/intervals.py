"""Intervals for the report: a model's shifts with their 95 % intervals, and method differences.

- :func:`shift_columns` / :func:`shift_cell`: clean error, mCE and each shift of
  ``results["shifts"]``. One run: the value and the interval its ``results.json`` holds
  (``ci95``). Several seeds: mean ± std (n) and a bootstrap interval over the test images of the
  seeds' mean (from their ``per_image.npz``). No interval recorded: ``—``, never invented.
- :func:`differences`: each setting vs the ``basic`` setting of the same dataset and backbone
  (and training length, data sizes, corrupted set): ``method - basic`` with a 95 % interval, by
  a Welch t interval over seeds when both have >= 3 seeds, else a paired bootstrap over the same
  test images from the runs' ``per_image.npz`` (the seeds of a setting averaged per image).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from snc.eval import stats
from snc.report.collect import Variant, per_image

# the settings two runs must share to be compared (method, its options and the seed may differ)
COMPARABLE = ("dataset", "backbone", "epochs", "max_steps", "num_train", "num_test",
              "corrupted_set")
BASELINE = "basic"
COMPARED = ("clean/error", "mce")
NOT_DISTINGUISHABLE = "not distinguishable at 95 % (interval contains 0)"
DISTINGUISHABLE = "interval excludes 0"


def _num(x: Any) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(float(x)):
        return None
    return float(x)


def _close(a: Optional[float], b: Optional[float]) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def benchmark_shift(run: Dict) -> Optional[str]:
    """The shift whose mCE is the run's top-level ``mce`` (the benchmark -C set), if any."""
    for name, block in (run.get("shifts") or {}).items():
        if block.get("kind") == "corruptions" and _close(_num(block.get("mce")),
                                                         _num(run.get("mce"))):
            return name
    return None


def _bootstrap(runs: Sequence[Dict]) -> Tuple[int, int]:
    spec = next((r["bootstrap"] for r in runs if isinstance(r.get("bootstrap"), dict)), {})
    return int(spec.get("resamples", stats.RESAMPLES)), int(spec.get("seed", 0))


def _protocol(v: Variant) -> str:
    return "imagenet" if v.settings.get("dataset") == "imagenet" else "cifar"


# ----- per-image arrays of a setting ----------------------------------------------------------
def _stack(arrays: List[Optional[np.ndarray]]) -> Optional[np.ndarray]:
    if any(a is None for a in arrays) or len({a.shape for a in arrays}) != 1:
        return None
    return np.stack(arrays)


def _clean(v: Variant) -> Optional[np.ndarray]:
    files = [per_image(r) for r in v.runs]
    return None if any(f is None for f in files) else _stack([f.get("clean") for f in files])


def _corrupted(v: Variant, shift: Optional[str]) -> Optional[Dict[Tuple[str, int], np.ndarray]]:
    """``{(corruption, severity): bool[seeds, N]}`` of ``shift`` (every seed must have it)."""
    files = [per_image(r) for r in v.runs]
    if shift is None or any(f is None for f in files):
        return None
    grids = [stats.grid_rows(f, shift) for f in files]
    if not grids[0] or any(set(g) != set(grids[0]) for g in grids):
        return None
    out = {}
    for key in grids[0]:
        arr = _stack([g[key] for g in grids])
        if arr is None:
            return None
        out[key] = arr
    return out


def _shift_of_runs(v: Variant) -> Optional[str]:
    names = {benchmark_shift(r) for r in v.runs}
    return names.pop() if len(names) == 1 else None


def _arrays(v: Variant, metric: str):
    """``(clean, corrupted or None)`` per-image arrays for ``metric``, or a reason (str)."""
    clean = _clean(v)
    if clean is None:
        return "no per_image.npz"
    if metric == "clean/error":
        return clean, None
    corrupted = _corrupted(v, _shift_of_runs(v))
    if corrupted is None:
        return "no per-image corruption results"
    return clean, corrupted


# ----- the shifts table -----------------------------------------------------------------------
def shift_columns(runs: Sequence[Dict]) -> List[Tuple[str, str]]:
    """``(key, header)``: ``clean/error``, ``mce`` (unless every run has it as a shift), then
    each shift of the runs in order of appearance."""
    cols: List[Tuple[str, str]] = []
    if any(_num(r.get("clean/error")) is not None for r in runs):
        cols.append(("clean/error", "clean error (%) ↓"))
    if any(_num(r.get("mce")) is not None and benchmark_shift(r) is None for r in runs):
        cols.append(("mce", "mCE (%) ↓"))
    seen: Dict[str, str] = {}
    for r in runs:
        for name, block in (r.get("shifts") or {}).items():
            if name not in seen:
                what = "mCE" if block.get("kind") == "corruptions" else "error"
                seen[name] = f"{block.get('title') or name} {what} (%) ↓"
    return cols + [(f"shifts/{k}", h) for k, h in seen.items()]


def _value(run: Dict, key: str) -> Tuple[Optional[float], Optional[Sequence[float]], str]:
    """``(value, recorded interval, note)`` of a column for one run."""
    if not key.startswith("shifts/"):
        return _num(run.get(key)), (run.get("ci95") or {}).get(key), ""
    block = (run.get("shifts") or {}).get(key[len("shifts/"):])
    if not block:
        return None, None, ""
    m = "mce" if block.get("kind") == "corruptions" else "error"
    note = " [generated-C]" if block.get("set") == "generated" else ""
    return _num(block.get(m)), (block.get("ci95") or {}).get(m), note


def _seed_mean_interval(v: Variant, key: str) -> Optional[Tuple[float, float]]:
    """Bootstrap interval over the images of the seeds' mean (their per-image files)."""
    resamples, seed = _bootstrap(v.runs)
    clean = _clean(v)
    if clean is None:
        return None
    try:
        if key == "clean/error":
            return stats.error_interval(clean, resamples=resamples, seed=seed)
        shift = _shift_of_runs(v) if key == "mce" else key[len("shifts/"):]
        block = (v.runs[0].get("shifts") or {}).get(shift or "", {})
        if key != "mce" and block.get("kind") != "corruptions":
            arr = _stack([(per_image(r) or {}).get(shift) for r in v.runs])
            return None if arr is None else stats.error_interval(arr, resamples=resamples,
                                                                 seed=seed)
        corrupted = _corrupted(v, shift)
        if corrupted is None:
            return None
        return stats.mce_interval(clean, corrupted, protocol=_protocol(v),
                                  resamples=resamples, seed=seed).get("mce")
    except ValueError:
        return None


def _interval_text(ci: Optional[Sequence[float]], digits: int = 2) -> str:
    if not ci or len(ci) != 2 or any(_num(x) is None for x in ci):
        return "[—]"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def shift_cell(v: Variant, key: str) -> str:
    """``12.34 [11.70, 12.98]`` (one run) or ``12.34 ± 0.50 (n=3) [lo, hi]`` (seeds)."""
    vals = [_value(r, key) for r in v.runs]
    numbers = [x for x, _, _ in vals if x is not None]
    if not numbers:
        return "–"
    note = vals[0][2]
    if v.n == 1:
        return f"{numbers[0]:.2f} {_interval_text(vals[0][1])}{note}"
    if len(numbers) < v.n:  # some seeds lack it: no mean that would mix other seeds
        return f"– ({len(numbers)} of {v.n} seeds)"
    summary = stats.seed_summary(numbers)
    std = "–" if summary["std"] is None else f"{summary['std']:.2f}"
    return (f"{summary['mean']:.2f} ± {std} (n={v.n}) "
            f"{_interval_text(_seed_mean_interval(v, key))}{note}")


def has_intervals(runs: Sequence[Dict]) -> bool:
    """Whether any run records intervals or shifts (the shifts table is shown then)."""
    return any(r.get("ci95") or r.get("shifts") for r in runs)


# ----- differences ----------------------------------------------------------------------------
def comparable(v: Variant) -> Tuple:
    """What two variants must share to be compared: task and :data:`COMPARABLE` settings."""
    task = {str(r.get("task") or "classify") for r in v.runs}
    return (tuple(sorted(task)),) + tuple(repr(v.settings.get(k)) for k in COMPARABLE)


def difference(a: Variant, b: Variant, metric: str) -> Dict:
    """``a - b`` of ``metric`` (points): over seeds when both have >= 3, else paired over
    images; ``how`` says which, ``low``/``high`` are None when neither is possible."""
    xa, xb = a.values(metric), b.values(metric)
    out = {"metric": metric, "diff": sum(xa) / len(xa) - sum(xb) / len(xb),
           "low": None, "high": None, "contains_zero": None, "n_a": len(xa), "n_b": len(xb)}
    if len(xa) >= 3 and len(xb) >= 3:
        d = stats.seed_difference(xa, xb)
        out.update({k: d[k] for k in ("diff", "low", "high", "contains_zero")})
        out["how"] = f"Welch t over seeds ({len(xa)} vs {len(xb)})"
        return out
    pa, pb = _arrays(a, metric), _arrays(b, metric)
    for p in (pa, pb):
        if isinstance(p, str):
            out["how"] = f"— (< 3 seeds, {p})"
            return out
    resamples, seed = _bootstrap(a.runs + b.runs)
    (ca, ka), (cb, kb) = pa, pb
    try:
        if metric == "clean/error":
            d = stats.paired_difference(ca, cb, resamples=resamples, seed=seed)
        else:
            d = stats.mce_difference(ca, ka, cb, kb, metric=metric, protocol=_protocol(a),
                                     resamples=resamples, seed=seed)
    except ValueError as e:
        out["how"] = f"— (< 3 seeds, {str(e).split(':')[0]})"
        return out
    if abs(d["diff"] - out["diff"]) > 1e-6:  # the files are not the results of these runs
        out["how"] = "— (< 3 seeds, per_image.npz ≠ results.json)"
        return out
    out.update({k: d[k] for k in ("diff", "low", "high", "contains_zero")})
    out["how"] = f"paired bootstrap over {ca.shape[-1]} images ({resamples} resamples)"
    return out


def differences(models: Sequence[Tuple[str, Variant]]) -> List[Dict]:
    """Each non-baseline model vs every ``basic`` model it is comparable with, per metric of
    :data:`COMPARED` both have; ``models`` are ``(label, variant)`` in report order."""
    rows = []
    for name, v in models:
        if v.settings.get("method") == BASELINE:
            continue
        for base_name, base in models:
            if base.settings.get("method") != BASELINE or comparable(base) != comparable(v):
                continue
            for metric in COMPARED:
                if v.values(metric) and base.values(metric):
                    row = difference(v, base, metric)
                    row.update({"model": name, "baseline": base_name,
                                "dataset": v.settings.get("dataset"),
                                "backbone": v.settings.get("backbone")})
                    rows.append(row)
    return rows


def verdict(row: Dict) -> str:
    if row["contains_zero"] is None:
        return "—"
    return NOT_DISTINGUISHABLE if row["contains_zero"] else DISTINGUISHABLE
