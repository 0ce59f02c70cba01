"""Collect finished runs (local ``results.json`` files, or a W&B project) and pick the best of
each grid, as the paper's appendix does (lowest mCE of the active_num x prob grid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


def find_results(paths: Iterable[Path]) -> List[Dict]:
    """Every ``results.json`` under ``paths`` (files or folders), with ``run_dir`` set."""
    runs = []
    for path in paths:
        path = Path(path)
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for f in files:
            data = json.loads(f.read_text())
            data.setdefault("run_dir", str(f.parent))
            runs.append(data)
    return runs


def wandb_results(project: str, entity: Optional[str] = None) -> List[Dict]:
    """Finished runs of a W&B project (needs network and a login): summary + paper cells."""
    import wandb

    api = wandb.Api()
    runs = []
    for run in api.runs(f"{entity}/{project}" if entity else project,
                        filters={"state": "finished"}):
        data = {k: v for k, v in run.summary.items() if not k.startswith("_")}
        data.setdefault("run_dir", run.url)
        runs.append(data)
    return runs


def cell_key(cell: Dict) -> Tuple[str, str, str, str]:
    return cell["table"], cell["row"], cell["column"], cell["dataset"]


def group_by_cell(runs: Sequence[Dict]) -> Dict[Tuple[str, str, str, str], List[Dict]]:
    """Runs per paper cell (a run may reproduce several cells)."""
    groups: Dict[Tuple[str, str, str, str], List[Dict]] = {}
    for run in runs:
        for cell in run.get("paper_cells") or []:
            groups.setdefault(cell_key(cell), []).append(run)
    return groups


def select_best(runs: Sequence[Dict], metric: str = "mce") -> Dict:
    """The run with the lowest ``metric`` (ties: lower clean error), as the appendix grid."""
    scored = [r for r in runs if r.get(metric) is not None]
    if not scored:
        raise ValueError(f"no run has {metric!r}")
    return min(scored, key=lambda r: (r[metric], r.get("clean/error", 0.0)))
