"""Log a finished run to W&B from its local files: ``python -m snc.tracking sync <run_dir>``.

A run trained with ``logger=none``, or whose W&B start failed, holds everything W&B would have
had: ``config.yaml``, ``metrics.jsonl`` (every logged row) and ``results.json``. ``sync`` opens a
W&B run for it (offline by default, like training; ``--mode online`` streams), replays the rows
at their steps, writes the summary and the corruption tables, and records the run's id in
``<run_dir>/wandb.json`` so a later ``snc.evaluate`` of the run logs into the same W&B run.

    python -m snc.tracking sync outputs/demo/<run>
    python -m snc.tracking sync outputs/demo/<run> --mode online --project my-project
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from snc.console import error_line
from snc.errors import ConfigError
from snc.tracking.local import LocalTracker
from snc.tracking.wandb import WandbTracker, run_record

log = logging.getLogger("snc")
MODES = ("offline", "online")


def tracker_tags(results: Mapping[str, Any], config: Mapping[str, Any]) -> List[str]:
    """The tags a run is logged with: its own, dataset, backbone, method, position, crop and
    experiment (the training run's and ``sync``'s are the same)."""
    tags = list(config.get("tags") or [])
    tags += [str(results.get(k)) for k in ("dataset", "backbone", "method", "position")
             if results.get(k)]
    if results.get("crop"):
        tags.append(f"crop={results['crop']}")
    if results.get("experiment"):
        tags.append(str(results["experiment"]))
    return tags


def tracker_group(results: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    return str(config.get("group") or results.get("experiment")
               or f"{results.get('dataset')}-{results.get('backbone')}")


def log_results(run_dir: Path, results: Mapping[str, Any], config: Mapping[str, Any], *,
                project: str, entity: Optional[str], mode: str, job_type: str,
                rows: Sequence[Mapping[str, Any]] = (), resume_id: Optional[str] = None
                ) -> Optional[str]:
    """Opens (or, with ``resume_id``, continues) a W&B run for ``run_dir``, logs ``rows`` at
    their steps, then the summary and tables of ``results``. Returns the W&B run id (None when
    W&B could not start: the warning says why; the local files are untouched)."""
    tracker = WandbTracker(Path(run_dir), project=project, entity=entity, mode=mode)
    run_id = tracker.start(dict(config), name=Path(run_dir).name,
                           group=tracker_group(results, config), job_type=job_type,
                           tags=tracker_tags(results, config), resume_id=resume_id)
    if run_id is None:
        return None
    status = "failed"
    try:
        tracker.replay(rows)
        tracker.summary(results)
        status = "finished"
    finally:
        tracker.finish(status)
    return run_id


def sync_run(run_dir: Path, *, project: Optional[str] = None, entity: Optional[str] = None,
             mode: Optional[str] = None, again: bool = False) -> Optional[str]:
    """Logs the finished local run ``run_dir`` to W&B; returns the W&B run id.

    Raises:
        ConfigError: not a finished run, or already logged (``again=True`` logs it anew).
    """
    run_dir = Path(run_dir)
    results_path, config_path = run_dir / "results.json", run_dir / "config.yaml"
    if not results_path.is_file():
        raise ConfigError(f"{run_dir} holds no results.json: give the folder of a finished run "
                          "(outputs/<experiment>/<run>); a run still training logs itself")
    record = run_record(run_dir)
    if record and not again:
        raise ConfigError(f"{run_dir} is already logged to W&B run {record.get('id')} "
                          f"({record.get('mode', 'offline')}); upload an offline run with: "
                          f"wandb sync {run_dir}/wandb/offline-run-* (or pass --again to log "
                          "it as a new run)")
    results = json.loads(results_path.read_text())
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    wb = ((config.get("logger") or {}).get("wandb") or {})
    if mode is not None and mode not in MODES:
        raise ConfigError(f"--mode {mode}: choose offline or online")
    trained = "time/train_seconds" in results
    return log_results(
        run_dir, results, config, project=project or wb.get("project")
        or f"snc-{results.get('dataset', 'runs')}", entity=entity or wb.get("entity"),
        mode=mode or wb.get("mode") or "offline",
        job_type=str(results.get("method", "run")) if trained else "eval",
        rows=LocalTracker(run_dir).rows())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m snc.tracking",
        description="Log a finished local run (logger=none, or a failed W&B start) to W&B.")
    sub = parser.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="log a finished run's files to a W&B run")
    sync.add_argument("run_dir", type=Path, help="the run's folder (holds results.json)")
    sync.add_argument("--project", help="W&B project (default: the run's logger.wandb.project)")
    sync.add_argument("--entity", help="W&B entity (default: the run's, or your default)")
    sync.add_argument("--mode", choices=MODES, help="offline (default) or online")
    sync.add_argument("--again", action="store_true",
                      help="log a run that already has a W&B run as a new one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_id = sync_run(args.run_dir, project=args.project, entity=args.entity,
                          mode=args.mode, again=args.again)
    except ConfigError as err:
        print(error_line(err), file=sys.stderr)
        return 2
    if run_id is None:
        print("snc: error: W&B did not start (see the warning above); nothing was logged",
              file=sys.stderr)
        return 1
    record: Dict[str, Any] = run_record(args.run_dir)
    where = (f"offline; upload with: wandb sync {args.run_dir}/wandb/offline-run-*"
             if record.get("mode") == "offline" else "online")
    print(f"[snc] {args.run_dir} logged to W&B run {run_id} ({where})")
    return 0
