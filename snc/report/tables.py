"""Paper-layout tables: published number, this framework's number and the difference."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence

from snc.report.collect import group_by_cell, select_best
from snc.report.published import load_published, metric_of, published_value


def compare(runs: Sequence[Dict]) -> List[Dict]:
    """One entry per paper cell that has runs: published, ours (best of its runs), difference."""
    entries = []
    for (table, row, column, dataset), cell_runs in sorted(group_by_cell(runs).items()):
        metric = metric_of(table, column)
        best = select_best(cell_runs, "mce" if "mce" in cell_runs[0] else metric)
        ours = best.get(metric)
        published = published_value(table, row, column, dataset)
        entries.append({
            "table": table, "row": row, "column": column, "dataset": dataset,
            "metric": metric, "published": published, "ours": ours,
            "diff": None if ours is None or published is None else ours - published,
            "runs": len(cell_runs), "best_run": best.get("run_dir"),
            "active_num": best.get("cn_active_num"), "prob": best.get("cn_prob"),
            "trained_on": best.get("dataset"), "corrupted_set": best.get("corrupted_set"),
        })
    return entries


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def markdown(entries: Sequence[Dict]) -> str:
    """Markdown tables in the layout of each paper table that has entries."""
    pub = load_published()
    by_table: Dict[str, List[Dict]] = {}
    for e in entries:
        by_table.setdefault(e["table"], []).append(e)
    out = []
    for table in sorted(by_table, key=lambda t: int(t.replace("table", ""))):
        spec = pub[table]
        mine = {(e["row"], e["column"], e["dataset"]): e for e in by_table[table]}
        datasets = sorted({ds for by_ds in spec["rows"].values() for ds in by_ds})
        out.append(f"### {spec['title']}\n")
        out.append("Each cell: published / this run (difference); '–' = not run.\n")
        for ds in datasets:
            out.append(f"**{ds}**\n")
            out.append("| | " + " | ".join(spec["columns"]) + " |")
            out.append("|---|" + "---|" * len(spec["columns"]))
            for row, by_ds in spec["rows"].items():
                if ds not in by_ds:
                    continue
                cells = []
                for col, value in zip(spec["columns"], by_ds[ds], strict=True):
                    e = mine.get((row, col, ds))
                    if e is None:
                        cells.append(_fmt(value))
                    else:
                        flag = "" if e["trained_on"] == ds else f" [{e['trained_on']}]"
                        diff = "" if e["diff"] is None else f" ({e['diff']:+.1f})"
                        cells.append(f"{_fmt(value)} / **{_fmt(e['ours'])}**{diff}{flag}")
                out.append(f"| {row} | " + " | ".join(cells) + " |")
            out.append("")
        generated = {e["corrupted_set"] for e in by_table[table]}
        if "generated" in generated:
            out.append("_Corruption errors of these runs come from a generated corrupted set, "
                       "not the published one._\n")
        grids = [e for e in by_table[table] if e["runs"] > 1]
        for e in grids:
            out.append(f"- {e['row']} / {e['column']} / {e['dataset']}: best of {e['runs']} "
                       f"runs (active_num={e['active_num']}, prob={e['prob']}): {e['best_run']}")
        out.append("")
    return "\n".join(out)


def write_csv(entries: Sequence[Dict], path: Path) -> None:
    fields = ["table", "row", "column", "dataset", "metric", "published", "ours", "diff",
              "runs", "active_num", "prob", "trained_on", "corrupted_set", "best_run"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for e in entries:
            writer.writerow({k: e.get(k) for k in fields})
