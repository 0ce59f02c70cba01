"""Local files: ``metrics.jsonl`` (one JSON object per log call) and ``results.json``.

Always on, so nothing depends on W&B being installed or reachable: ``metrics.jsonl`` is the
source of truth that a resumed run cuts back to its checkpoint and replays into W&B.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from snc.atomic import atomic_open


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic JSON write."""
    with atomic_open(path, "w") as f:
        f.write(json.dumps({k: _plain(v) for k, v in data.items()}, indent=2, sort_keys=True))


class LocalTracker:
    """Writes ``run_dir/metrics.jsonl`` and ``run_dir/results.json``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.results_path = self.run_dir / "results.json"

    def start(self, config, *, name, group, job_type, tags, resume_id: Optional[str] = None):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": int(step), **{k: _plain(v) for k, v in metrics.items()}})
                    + "\n")

    def rows(self) -> List[Dict[str, Any]]:
        """Every logged row, in order (a torn last line of a killed run is skipped)."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def truncate(self, step: int) -> None:
        """Keeps the rows up to ``step`` (a resumed run logs the later ones again)."""
        rows = self.rows()
        kept = [r for r in rows if int(r.get("step", 0)) <= step]
        if len(kept) != len(rows) or (self.metrics_path.exists() and rows and not
                                      self.metrics_path.read_text().endswith("\n")):
            with atomic_open(self.metrics_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)

    def replay(self, rows) -> None:
        pass  # the rows came from this file

    def summary(self, results: Mapping[str, Any]) -> None:
        write_json(self.results_path, results)

    def finish(self, status: str = "finished") -> None:
        pass
