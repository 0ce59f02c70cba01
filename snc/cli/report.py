"""Report any set of runs, and put paper-preset runs beside the paper's published numbers.

    python scripts/report.py outputs/                    # every run under outputs/
    python scripts/report.py outputs/table1_* --out reports/table1
    python scripts/report.py outputs/ --table table11    # only runs of Table 11's presets
    python scripts/report.py --wandb-project snc-cifar10 # finished runs of a W&B project
    python scripts/report.py outputs/ --select-on validation  # a grid's setting chosen on
                                                         # held-out corruptions, test mCE shown

Writes into --out (default reports/):
  report.md   runs grouped by experiment (and sweep): the task's metrics per setting (seeds
              pooled as mean ± std, n), the best setting and by which metric; plus, for runs of
              paper presets, tables in the paper's layout (published / ours (difference)), a
              cell filled only by runs of its dataset and backbone;
  runs.csv    one row per group x setting x metric;
  report.csv  one row per paper cell x match (header only when no run names a paper cell);
  heatmap_<group>.png  corruption x severity errors of each group's best setting;
  bars_<group>.png     the metrics of each setting of a group with several settings;
  mce_bars.png         mCE of the paper cells, published values as markers.
The last line printed counts exactly the files written; figures of an earlier report in the
same --out folder are removed first, so the folder holds what report.md names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from snc.report.collect import (
    SELECT_ON,
    MissingValidation,
    find_results,
    label,
    marks,
    wandb_results,
)
from snc.report.plots import corruption_grid, heatmap, mce_bars, metric_bars
from snc.report.tables import (
    PAPER_FIGURES,
    SETTING_NAMES,
    GroupSummary,
    compare,
    markdown,
    summarize,
    write_csv,
    write_runs_csv,
)

FIGURE_PATTERNS = ("heatmap_*.png", "bars_*.png", "mce_bars.png")  # what this script writes


def _short_setting(s: GroupSummary, settings: Dict) -> str:
    if not s.varying:
        return f"{settings.get('backbone')} {settings.get('method')}"
    return ", ".join(f"{SETTING_NAMES.get(k, k)}={settings.get(k)}" for k in s.varying)


def _err(v, metric: str):
    """Error bar of a setting: std over its seeds, or one run's recorded 95 % interval."""
    if v.n > 1:
        return v.std(metric)
    return _err_run(v.runs[0], metric)


def _group_figures(s: GroupSummary, out: Path) -> List[Path]:
    written: List[Path] = []
    best = s.best or (s.variants[0] if len(s.variants) == 1 else None)
    if best is not None and corruption_grid(best.runs)[0]:
        flags = " ".join(marks(best.runs))
        mce = best.mean("mce")
        seeds = f", mean of {best.n} seeds" if best.n > 1 else ""
        title = (f"{s.group.name}: {_short_setting(s, best.settings)}\n"
                 f"mCE {mce:.1f}%{seeds} {flags}" if mce is not None
                 else f"{s.group.name} {flags}")
        written.append(heatmap(best.runs[0], out / f"heatmap_{s.group.slug}.png",
                               title=title.strip(), runs=best.runs))
    if len(s.variants) > 1 and s.metrics:
        labels = [_short_setting(s, v.settings) + (f"\n(n={v.n} seeds)" if v.n > 1 else "")
                  + ("\n★ best" if v is s.best else "") for v in s.variants]
        series = {label(m): ([v.mean(m) for v in s.variants], [_err(v, m) for v in s.variants])
                  for m in s.metrics}
        marked = [bool(marks(v.runs)) for v in s.variants]
        how = "validation score" if s.select_on == "validation" else label(s.primary or "")
        title = s.group.name + (f" (best by {how})" if s.primary else "")
        title += "\nerror bars: std over seeds, or the run's 95 % interval"
        written.append(metric_bars(labels, series, marked, out / f"bars_{s.group.slug}.png",
                                   title=title))
    return written


def _err_run(run: Dict, metric: str):
    ci = (run.get("ci95") or {}).get(metric)
    return tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def _paper_bars(entries: List[Dict], out: Path) -> Optional[Path]:
    bars = [e for e in entries if e["metric"] == "mce" and e["ours"] is not None]
    if not bars:
        return None
    labels = [f"{e['table']} {e['row']} {e['column']} {e['dataset']}"
              + ("" if e["match"] == "cell" else f" ({e['match']})") for e in bars]
    marked = [e["match"] != "cell" or bool(e["marks"]) for e in bars]
    errs = [e["std"] if e["n"] > 1 else _err_run(e["best_runs"][0], "mce") for e in bars]
    return mce_bars(labels, [e["ours"] for e in bars], [e["published"] for e in bars],
                    out / "mce_bars.png", marked=marked, stds=errs,
                    marked_label="hatched: other backbone/dataset, synthetic data or "
                                 "generated corrupted set")


def _remove_old_figures(out: Path) -> int:
    """An earlier report in ``out`` (it has a report.md): remove its figures, so that the
    folder holds exactly the figures this report names and counts."""
    if not (out / "report.md").exists():
        return 0
    old = [p for pattern in FIGURE_PATTERNS for p in out.glob(pattern)]
    for p in old:
        p.unlink()
    return len(old)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run dirs or folders of run dirs")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--table", action="append",
                        help="only runs of presets of these tables (e.g. table1); repeatable")
    parser.add_argument("--select-on", choices=SELECT_ON, default="test",
                        help="how the best setting of a group (a grid) is chosen: test = "
                             "lowest test mCE (the paper's protocol); validation = lowest "
                             "validation score (held-out corruptions), its test mCE reported")
    parser.add_argument("--wandb-project", default=None)
    parser.add_argument("--wandb-entity", default=None)
    args = parser.parse_args(argv)
    runs = find_results(args.runs)
    if args.wandb_project:
        runs += wandb_results(args.wandb_project, args.wandb_entity)
    if args.table:
        runs = [r for r in runs if any(c.get("table") in args.table
                                       for c in r.get("paper_cells") or [])]
        for r in runs:
            r["paper_cells"] = [c for c in r["paper_cells"] if c.get("table") in args.table]
    if not runs:
        what = f" of {', '.join(args.table)}" if args.table else ""
        print(f"no results.json{what} found", file=sys.stderr)
        return 1
    try:
        entries = compare(runs, args.select_on)
        summaries = summarize(runs, args.select_on)
    except MissingValidation as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stale = _remove_old_figures(args.out)

    figures: Dict[str, List[str]] = {}
    pngs: List[Path] = []
    for s in summaries:
        written = _group_figures(s, args.out)
        figures[s.group.slug] = [p.name for p in written]
        pngs += written
    paper_png = _paper_bars(entries, args.out)
    if paper_png is not None:
        figures[PAPER_FIGURES] = [paper_png.name]
        pngs.append(paper_png)

    text = markdown(entries, summaries, runs, figures)
    (args.out / "report.md").write_text(text)
    files = ["report.md"]
    n_rows = write_runs_csv(summaries, args.out / "runs.csv")
    files.append(f"runs.csv ({n_rows} rows)")
    n_cells = write_csv(entries, args.out / "report.csv")
    files.append(f"report.csv ({n_cells} paper-cell rows)")
    heatmaps = sum(p.name.startswith("heatmap_") for p in pngs)
    print(text)
    if stale:
        print(f"removed {stale} figure(s) of an earlier report in {args.out}")
    print(f"wrote {args.out}/: {', '.join(files)} and {len(pngs)} PNG(s): {heatmaps} "
          f"heatmap(s), {len(pngs) - heatmaps} bar chart(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
