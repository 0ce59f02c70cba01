"""The paper's published numbers (``published.yaml``) and where a metric lives in them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

import yaml

PUBLISHED = Path(__file__).with_name("published.yaml")


@lru_cache(maxsize=None)
def load_published() -> Dict:
    """``{table: {title, metric, columns, rows: {row: {dataset: [values]}}}}``."""
    return yaml.safe_load(PUBLISHED.read_text())


def metric_of(table: str, column: str) -> str:
    """The results.json key a cell of ``table``/``column`` compares with."""
    spec = load_published()[table]
    metric = spec["metric"]  # one metric, or one per column (Table 2: clean, mCE; 3/4: domains)
    return metric[spec["columns"].index(column)] if isinstance(metric, list) else metric


def published_value(table: str, row: str, column: str, dataset: str) -> Optional[float]:
    """The published number of one cell; KeyError if the cell does not exist."""
    spec = load_published()[table]
    values = spec["rows"][row][dataset]
    return values[spec["columns"].index(column)]


def cells_of(table: str) -> List[Dict[str, str]]:
    """Every (row, column, dataset) cell of ``table``."""
    spec = load_published()[table]
    return [{"table": table, "row": row, "column": col, "dataset": ds}
            for row, by_ds in spec["rows"].items() for ds in by_ds for col in spec["columns"]]
