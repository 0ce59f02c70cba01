"""Weights & Biases sink, offline by default.

``mode=offline`` writes the run under ``<run_dir>/wandb`` with no network; ``wandb sync
<run_dir>/wandb/offline-run-*`` uploads it later. A resumed run continues the same W&B id and
replays the local history (:meth:`WandbTracker.replay`), so the synced curves are complete
even when the killed part's file holds only a few bytes. ``mode=online`` (or the ``WANDB_MODE``
environment variable, which wins) streams to the dashboard. A missing package or a failing
``wandb.init`` is a warning, never a crash: the local files hold everything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from snc.data.corruptions import ALL_CORRUPTIONS

log = logging.getLogger("snc")


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
        try:
            self.run = wandb.init(
                project=self.project, entity=self.entity, name=name, group=group,
                job_type=job_type, tags=list(tags), config=config, dir=str(self.run_dir),
                mode=self.mode, id=resume_id, resume="allow" if resume_id else None,
                reinit="finish_previous",
            )
        except Exception as err:  # network, credentials, ...: never lose the run for W&B
            log.warning("wandb.init failed (%s); logging to local files only", err)
            self.run = None
            return None
        self.run.define_metric("epoch")
        for key in ("clean/*", "train_epoch/*"):
            self.run.define_metric(key, step_metric="epoch")
        return self.run.id

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
        if self.run is None:
            return
        import wandb

        for key, value in results.items():
            self.run.summary[key] = value
        rows = []
        for name in ALL_CORRUPTIONS:
            errors = [results.get(f"corruption/{name}/s{s}/error") for s in range(1, 6)]
            if all(e is not None for e in errors):
                rows.append([name] + errors + [results[f"corruption/{name}/error"]])
        if rows:
            table = wandb.Table(columns=["corruption", "s1", "s2", "s3", "s4", "s5", "mean"],
                                data=rows)
            self.run.log({"corruption_errors": table})

    def finish(self, status: str = "finished") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None
