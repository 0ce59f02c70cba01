"""Put runs beside the paper's published numbers.

    python scripts/report.py outputs/                    # every run under outputs/
    python scripts/report.py outputs/table1_* --out reports/table1
    python scripts/report.py --wandb-project snc-cifar10 # finished runs of a W&B project

Writes <out>/report.md (paper-layout tables: published / ours (difference)), report.csv, a
corruption x severity heatmap PNG per reported run and mce_bars.png. Runs of one preset that
form a grid (sweep=appendix_grid) are reduced to the best one (lowest mCE), as the paper does.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from snc.report.collect import find_results, wandb_results
from snc.report.plots import heatmap, mce_bars
from snc.report.tables import compare, markdown, write_csv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run dirs or folders of run dirs")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--table", action="append", help="only these tables (e.g. table1)")
    parser.add_argument("--wandb-project", default=None)
    parser.add_argument("--wandb-entity", default=None)
    args = parser.parse_args(argv)
    runs = find_results(args.runs)
    if args.wandb_project:
        runs += wandb_results(args.wandb_project, args.wandb_entity)
    if not runs:
        print("no results.json found", file=sys.stderr)
        return 1
    entries = compare(runs)
    if args.table:
        entries = [e for e in entries if e["table"] in args.table]
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(entries) if entries else "No run reproduces a paper cell (no paper.cells).\n"
    (args.out / "report.md").write_text(text)
    write_csv(entries, args.out / "report.csv")
    by_dir = {r["run_dir"]: r for r in runs}
    bars = {}
    for e in entries:
        run = by_dir.get(e["best_run"])
        if run is None or "mce" not in run:
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(e["best_run"]).name)
        heatmap(run, args.out / f"heatmap_{stem}.png")
        if e["metric"] == "mce":
            bars[f"{e['table']}:{e['row']}:{e['column']}:{e['dataset']}"] = (run["mce"],
                                                                           e["published"])
    if bars:
        labels = list(bars)
        mce_bars(labels, [bars[k][0] for k in labels], [bars[k][1] for k in labels],
                 args.out / "mce_bars.png")
    print(text)
    print(f"wrote {args.out}/report.md, report.csv and {len(bars)} heatmap(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
