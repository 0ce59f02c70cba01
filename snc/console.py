"""What a researcher sees: a short run header, one-line errors, a table at the end of a sweep.

The resolved config goes to ``<run dir>/config.yaml`` and W&B, and to the console only with
``verbose=true``. Configuration and input errors print what is wrong and how to fix it in one or
two lines and exit non-zero (``verbose=true`` or ``SNC_TRACEBACK=1`` shows the traceback);
unexpected errors keep theirs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from omegaconf import DictConfig

log = logging.getLogger("snc")

# Errors that are the user's input, not a bug: shown as one line. The classes are looked up
# lazily so that importing this module stays cheap.
EXPECTED = ("ConfigError", "RunLocked", "FileNotFoundError", "FileExistsError", "DiskFull")


def is_expected(err: BaseException) -> bool:
    return any(cls.__name__ in EXPECTED for cls in type(err).__mro__)


def show_tracebacks(cfg: Optional[DictConfig] = None) -> bool:
    return bool(os.environ.get("SNC_TRACEBACK")) or bool(cfg is not None and cfg.get("verbose"))


def error_line(err) -> str:
    """``snc: error: <message>`` (chained causes are left out: the message names the fix)."""
    return f"snc: error: {err}"


def run_line(run_dir: Path, resumed: str) -> str:
    """The header's first line, printed before the (possibly long) set-up."""
    return f"[snc] {resumed} run: {run_dir}"


def header(cfg: DictConfig, meta: Mapping[str, Any], *, units: str, world: int) -> List[str]:
    """The header's other two lines, once the model is built: what is trained (``units``: the
    task's :meth:`~snc.tasks.base.Task.units_text`); how."""
    length = (f"{cfg.max_steps} steps" if cfg.get("max_steps") is not None
              else f"{cfg.epochs} epochs")
    place = meta.get("position", "default")
    return [
        f"      {meta['task']} | {meta['dataset']} | {meta['backbone']} | {meta['method']}"
        f" at {place} | {meta['num_params']:,} parameters",
        f"      {units} | {length}, batch {cfg.batch_size} | "
        f"{meta['device']}" + (f" x {world} processes" if world > 1 else ""),
    ]


# ----------------------------------------------------------------------------- sweeps

FINISHED: List[Dict[str, Any]] = []  # results of the jobs finished in this process


def interval_text(ci: Optional[Mapping[str, Any]], key: str) -> str:
    """`` [lo, hi]`` of ``key`` in a ``ci95`` mapping, or nothing when it holds none."""
    low_high = (ci or {}).get(key)
    return f" [{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else ""


def record(results: Mapping[str, Any]) -> None:
    """Called by the engine when a run finishes (or is returned finished)."""
    FINISHED.append(dict(results))


SUMMARY_KEYS = ("clean/error", "mce", "source/accuracy", "target/accuracy", "source/miou",
                "target/miou")


def sweep_table(jobs: List[Dict[str, Any]]) -> List[str]:
    """One line per job: the overrides that vary between the jobs, and its headline metrics."""
    keys = [k for k in SUMMARY_KEYS if any(k in j.get("results", {}) for j in jobs)]
    common = set.intersection(*(set(j["overrides"]) for j in jobs)) if len(jobs) > 1 else set()
    rows = [["job", "overrides"] + keys]
    for j in jobs:
        res = j.get("results") or {}
        varying = [o for o in j["overrides"] if o not in common]
        rows.append([str(j["num"]), " ".join(varying) or "-"]
                    + [f"{res[k]:.2f}" if isinstance(res.get(k), (int, float)) else
                       ("failed" if j.get("failed") else "-") for k in keys])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in configs/train.yaml): prints one table of every
    job at the end of a multirun, and where Hydra put its sweep files."""

    def __init__(self) -> None:
        self.jobs: List[Dict[str, Any]] = []

    def on_job_end(self, config, job_return, **kwargs) -> None:
        failed = getattr(getattr(job_return, "status", None), "name", "") == "FAILED"
        self.jobs.append({"num": len(self.jobs), "overrides": list(job_return.overrides or []),
                          "results": FINISHED[-1] if FINISHED and not failed else {},
                          "failed": failed})

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.jobs:
            return
        lines = sweep_table(self.jobs)
        print(f"[snc] sweep of {len(self.jobs)} jobs (files: {config.hydra.sweep.dir}):",
              *lines, sep="\n  ", flush=True)


def fail(err: BaseException, cfg: Optional[DictConfig] = None) -> None:
    """Prints an expected error in one line and exits 2; anything else is re-raised.

    A write that ran out of space anywhere (a log line, ``config.yaml``) is said as
    :class:`~snc.atomic.DiskFull` does, naming the folder; a folder that may not be written
    names the path and the options that move it; a key left ``???`` in a config names the key
    to set."""
    err = _as_expected(err, cfg)
    if not is_expected(err) or show_tracebacks(cfg):
        raise err
    print(error_line(err), file=sys.stderr, flush=True)
    raise SystemExit(2)


def _as_expected(err: BaseException, cfg: Optional[DictConfig]) -> BaseException:
    from omegaconf.errors import MissingMandatoryValue

    from snc.atomic import DiskFull, disk_full_error, is_disk_full
    from snc.errors import ConfigError

    if is_disk_full(err) and not isinstance(err, DiskFull):
        name = getattr(err, "filename", None)
        if name:
            converted = disk_full_error(Path(name).parent, Path(name).name)
        else:
            paths = (cfg.get("paths") if cfg is not None else None) or {}
            converted = disk_full_error(paths.get("output_dir") or os.getcwd())
    elif isinstance(err, PermissionError):
        what = getattr(err, "filename", None) or "a file"
        converted = ConfigError(f"cannot access {what} (permission denied): choose folders you "
                                "can write (paths.data_dir=..., paths.output_dir=...) or fix "
                                "their permissions")
    elif isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or "a key"
        converted = ConfigError(f"{key} has no value: set {key}=... on the command line")
    else:
        return err
    converted.__cause__ = err
    return converted


def metrics_text(metrics: Dict[str, float], skip: Sequence[str] = ()) -> str:
    """``loss 1.3, val/accuracy 30.2``: each metric by the last part of its name, or by its
    whole name where that part is shared (``val/accuracy`` and ``test/accuracy``)."""
    keys = [k for k in metrics if k not in skip]
    short = [k.split("/")[-1] for k in keys]
    return ", ".join(f"{s if short.count(s) == 1 else k} {metrics[k]:.4g}"
                     for k, s in zip(keys, short, strict=True))
