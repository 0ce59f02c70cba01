"""Weights & Biases sink, offline by default.

``mode=offline`` writes the run under ``<run_dir>/wandb`` with no network; ``wandb sync
<run_dir>/wandb/offline-run-*`` uploads it later. ``mode=online`` with no credentials (no
``WANDB_API_KEY``, no ``wandb login``), or an online start that fails, falls back to offline
with one warning that says how to upload. The run's id is kept in ``<run_dir>/wandb.json``, so
a later ``snc.evaluate`` logs into the same run and ``python -m snc.tracking sync`` knows
whether a run was ever logged. A resumed run continues the same W&B id and
replays the local history (:meth:`WandbTracker.replay`), so the synced curves are complete
even when the killed part's file holds only a few bytes. ``mode=online`` (or the ``WANDB_MODE``
environment variable, which wins) streams to the dashboard. A missing package or a failing
``wandb.init`` is a warning, never a crash: the local files hold everything.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import urlparse

from snc.atomic import read_marker, write_marker

log = logging.getLogger("snc")

RECORD = "wandb.json"  # in the run directory: the W&B run's id, project and entity
_GRID_KEY = re.compile(r"^corruption/(.+)/s(\d+)/error$")


def has_credentials() -> bool:
    """W&B credentials as ``wandb`` finds them: ``WANDB_API_KEY`` (or an identity token file)
    in the environment, or a ``wandb login`` entry for the W&B host in the netrc file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def run_record(run_dir: Path) -> Dict[str, Any]:
    """``{"id", "project", "entity", "mode"}`` of the W&B run a run directory was logged to
    (``{}`` when it never was)."""
    return read_marker(Path(run_dir) / RECORD)


def flat_summary(results: Mapping[str, Any]) -> Dict[str, Any]:
    """The results with every number of each shift block also as a flat key
    ``<shift>/<key>`` (``cifar10c_bar/mce``, ``cifar10_1/error``, ``<shift>/ci95/...``)."""
    flat = dict(results)
    for name, block in (results.get("shifts") or {}).items():
        for key, value in _numbers(block):
            flat[f"{name}/{key}"] = value
    return flat


def _numbers(block: Mapping[str, Any], prefix: str = ""):
    for key, value in block.items():
        if isinstance(value, Mapping):
            yield from _numbers(value, f"{prefix}{key}/")
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, (int, float)) for v in value):  # an interval
            yield f"{prefix}{key}/low", value[0]
            yield f"{prefix}{key}/high", value[1]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def grid_rows(results: Mapping[str, Any]) -> List[List[Any]]:
    """``[corruption, s1..s5, mean]`` rows of one corrupted set's results (a -C or -C-bar
    block, or the run's own top-level keys), in the order the results list them."""
    severities: Dict[str, Dict[int, float]] = {}
    for key, value in results.items():
        match = _GRID_KEY.match(str(key))
        if match:
            severities.setdefault(match.group(1), {})[int(match.group(2))] = value
    return [[name] + [by[s] for s in range(1, 6)] + [results.get(f"corruption/{name}/error")]
            for name, by in severities.items() if all(s in by for s in range(1, 6))]


class WandbTracker:
    """W&B run per training job: config, per-step and per-epoch series, summary, and a table
    of corruption x severity errors."""

    def __init__(self, run_dir: Path, project: str, entity: Optional[str] = None,
                 mode: str = "offline") -> None:
        self.run_dir = Path(run_dir)
        self.project, self.entity = project, entity
        self.mode = os.environ.get("WANDB_MODE", mode)
        self.run = None

    def start(self, config, *, name, group, job_type, tags, resume_id=None):
        try:
            import wandb
        except ImportError:
            log.warning("wandb is not installed; logging to local files only")
            return None
        os.environ.setdefault("WANDB_SILENT", "true")
        if self.mode == "online" and not has_credentials():
            self._to_offline("no W&B credentials (WANDB_API_KEY or `wandb login`)")
        kwargs = dict(project=self.project, entity=self.entity, name=name, group=group,
                      job_type=job_type, tags=list(tags), config=config, dir=str(self.run_dir),
                      id=resume_id, resume="allow" if resume_id else None,
                      reinit="finish_previous")
        try:
            self.run = wandb.init(mode=self.mode, **kwargs)
        except Exception as err:  # network, credentials, ...: never lose the run for W&B
            if self.mode != "online":
                log.warning("wandb.init failed (%s); logging to local files only", err)
                self.run = None
                return None
            self._to_offline(f"the online start failed ({err})")
            try:
                self.run = wandb.init(mode=self.mode, **kwargs)
            except Exception as err2:  # noqa: BLE001
                log.warning("wandb.init failed (%s); logging to local files only", err2)
                self.run = None
                return None
        self.run.define_metric("epoch")
        for key in ("clean/*", "train_epoch/*"):
            self.run.define_metric(key, step_metric="epoch")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_marker(self.run_dir / RECORD, {"id": self.run.id, "project": self.project,
                                             "entity": self.entity, "mode": self.mode})
        return self.run.id

    def _to_offline(self, why: str) -> None:
        self.mode = "offline"
        log.warning("W&B: %s; logging offline under %s. Upload it later with: wandb sync "
                    "%s/wandb/offline-run-*", why, self.run_dir / "wandb", self.run_dir)

    def replay(self, rows) -> None:
        """Logs the local history again into a resumed run (same id): a killed run's offline
        file holds only what was flushed, so the complete curves come from ``metrics.jsonl``.
        Rows before the run's current step (an online run that already has them) are skipped.
        """
        if self.run is None:
            return
        start = int(getattr(self.run, "step", 0) or 0)
        for row in rows:
            step = int(row.get("step", 0))
            if step >= start:
                self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=int(step))

    def summary(self, results: Mapping[str, Any]) -> None:
        """The results as the run's summary (every shift's numbers also as flat
        ``<shift>/<key>`` keys) and a corruption x severity table per corrupted set:
        ``corruption_errors`` for the run's own set, ``<shift>/corruption_errors`` for each
        -C / -C-bar shift block."""
        if self.run is None:
            return
        import wandb

        for key, value in flat_summary(results).items():
            self.run.summary[key] = value
        columns = ["corruption", "s1", "s2", "s3", "s4", "s5", "mean"]
        tables = {"corruption_errors": grid_rows(results)}
        for name, block in (results.get("shifts") or {}).items():
            tables[f"{name}/corruption_errors"] = grid_rows(block)
        for key, rows in tables.items():
            if rows:
                self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def finish(self, status: str = "finished") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None
