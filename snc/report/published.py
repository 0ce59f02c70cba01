"""The paper's published numbers (``published.yaml``) and what a run must be to fill a cell."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional

import yaml

PUBLISHED = Path(__file__).with_name("published.yaml")
# The backbone a published number was measured with: a run fills a cell only with this backbone
# (and the cell's dataset). By row prefix (Tables 1, 9-12), else by table (WRN-40-2 ablations,
# ResNet-50 on ImageNet and GTA5, TextCNN). The official architectures, as the presets use.
ROW_BACKBONES = {"AllConvNet": "allconv", "DenseNet": "densenet40_12", "WideResNet": "wrn40_2",
                 "ResNeXt": "resnext29_4x32d"}
TABLE_BACKBONES = {"table2": "resnet50", "table3": "resnet50", "table4": "textcnn",
                   "table5": "wrn40_2", "table6": "wrn40_2", "table7": "wrn40_2",
                   "table8": "wrn40_2", "table13": "resnet50", "table14": "resnet50",
                   "table15": "resnet50", "fig4": "wrn28_2_fm"}


@lru_cache(maxsize=None)
def load_published() -> Dict:
    """``{table: {title, metric, columns, rows: {row: {dataset: [values]}}}}``."""
    return yaml.safe_load(PUBLISHED.read_text())


def metric_of(table: str, column: str) -> str:
    """The results.json key a cell of ``table``/``column`` compares with: the table's metric, or
    with a list of metrics, the one at the column's position (``[source/miou, target/miou]``
    for columns ``[Source, Target]``)."""
    spec = load_published()[table]
    metric = spec["metric"]
    if not isinstance(metric, list):
        return metric
    if len(metric) != len(spec["columns"]):
        raise ValueError(f"published.yaml: {table} has {len(metric)} metrics for "
                         f"{len(spec['columns'])} columns")
    return metric[spec["columns"].index(column)]


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


def cell_backbones(table: str, row: str) -> FrozenSet[str]:
    """Backbones whose runs may fill a cell of ``table``/``row`` (empty: unknown, any)."""
    for prefix, backbone in ROW_BACKBONES.items():
        if row.startswith(prefix):
            return frozenset({backbone})
    return frozenset({TABLE_BACKBONES[table]}) if table in TABLE_BACKBONES else frozenset()


def table_order(table: str) -> tuple:
    """Sort key: table1, table2, ..., table15 (numbers, not strings)."""
    digits = "".join(ch for ch in table if ch.isdigit())
    return (int(digits) if digits else 10**6, table)
