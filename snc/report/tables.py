"""Report tables: paper cells (published / ours / difference) and runs grouped by experiment.

Rules (the README's "Report" paragraph):
- a run fills a paper cell only when its dataset and backbone are the cell's; runs launched for
  a cell on another dataset or backbone are listed beside it ("other dataset"/"other backbone");
- runs that differ only by seed are one setting, shown as mean ± std (n), never best-of-seeds;
- the best setting of a grid is the one with the best mean primary metric (lowest mCE for
  classification); on the appendix grid this is the paper's protocol, selected on the test
  corruptions; ``select_on="validation"`` chooses by a validation score instead (held-out
  corruptions, :func:`snc.report.collect.validation`) and reports that choice's test mCE;
- intervals: each model's shifts with the 95 % intervals its results hold, and each method minus
  the ``basic`` method of its dataset and backbone with a 95 % interval (:mod:`.intervals`);
- synthetic-data runs carry ``[synthetic]``, generated corrupted sets ``[generated-C]``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from snc.report import intervals
from snc.report.collect import (
    Group,
    Variant,
    best_variant,
    group_by_cell,
    group_runs,
    higher_is_better,
    label,
    marks,
    pool_seeds,
    primary_metric,
    task_metrics,
    validation,
    validation_score,
    varying_keys,
)
from snc.report.published import (
    cell_backbones,
    load_published,
    metric_of,
    published_value,
    table_order,
)

SETTING_NAMES = {"cn_active_num": "active_num", "cn_prob": "prob", "setting_hash": "setting"}
MATCHES = ("cell", "other backbone", "other dataset")
PAPER_FIGURES = ":paper"  # key of the paper-cell figures in ``figures`` (never a group slug)
PAPER_PROTOCOL = "selected on the test corruptions (paper protocol)"
VALIDATION_PROTOCOL = "selected on held-out validation corruptions, not the test mCE"
CSV_FIELDS = ["table", "row", "column", "dataset", "metric", "match", "published", "ours", "std",
              "n", "diff", "runs", "settings", "active_num", "prob", "trained_on", "backbone",
              "corrupted_set", "marks", "best_run"]
RUNS_CSV_FIELDS = ["group", "experiment", "sweep", "best", "n", "seeds", "settings", "metric",
                   "mean", "std", "marks", "run_dirs"]


def _match(run: Dict, table: str, row: str, dataset: str) -> str:
    if run.get("dataset") != dataset:
        return "other dataset"
    allowed = cell_backbones(table, row)
    if allowed and run.get("backbone") not in allowed:
        return "other backbone"
    return "cell"


def _settings_text(settings: Dict[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{SETTING_NAMES.get(k, k)}={settings.get(k)}" for k in keys)


def compare(runs: Sequence[Dict], select_on: str = "test") -> List[Dict]:
    """One entry per (paper cell, match) that has runs: ``match`` is ``cell`` (dataset and
    backbone are the cell's: ``diff`` = ours - published), ``other backbone`` or ``other
    dataset`` (listed beside the cell, no difference). ``ours`` is the mean over seeds of the
    best setting (by mean mCE, else the task's primary metric), ``n`` its number of seeds,
    ``runs`` the number of runs of that match. Cells of tables missing from published.yaml get
    ``match = 'not in published.yaml'``. ``select_on="validation"``: a grid's setting is
    chosen by the validation score (``select_on`` and ``validation`` say so and give it)."""
    pub = load_published()
    entries = []
    for (table, row, column, dataset), cell_runs in sorted(group_by_cell(runs).items()):
        known = table in pub and row in pub[table]["rows"] and dataset in \
            pub[table]["rows"][row] and column in pub[table]["columns"]
        by_match: Dict[str, List[Dict]] = {}
        for run in cell_runs:
            m = _match(run, table, row, dataset) if known else "not in published.yaml"
            by_match.setdefault(m, []).append(run)
        for match in sorted(by_match, key=lambda m: MATCHES.index(m) if m in MATCHES else 9):
            members = by_match[match]
            metric = metric_of(table, column) if known else None
            variants = pool_seeds(members)
            select = "mce" if any("mce" in r for r in members) else (metric or
                                                                     primary_metric(members))
            how = "validation" if select_on == "validation" and select == "mce" \
                and len(variants) > 1 else "test"
            try:
                best = best_variant(variants, select, how)
            except ValueError:
                if how == "validation":
                    raise
                best = variants[0]
            ours = best.mean(metric) if metric else None
            published = published_value(table, row, column, dataset) if known else None
            first = best.runs[0]
            entries.append({
                "table": table, "row": row, "column": column, "dataset": dataset,
                "metric": metric, "match": match, "published": published, "ours": ours,
                "std": best.std(metric) if metric else None, "n": best.n,
                "diff": (ours - published if match == "cell" and ours is not None
                         and published is not None else None),
                "runs": len(members), "variants": len(variants), "selected_by": select,
                "select_on": how,
                "validation": best.validation() if how == "validation" else None,
                "settings": _settings_text(best.settings, varying_keys(variants)),
                "active_num": first.get("cn_active_num"), "prob": first.get("cn_prob"),
                "trained_on": first.get("dataset"), "backbone": first.get("backbone"),
                "corrupted_set": first.get("corrupted_set"), "marks": " ".join(marks(best.runs)),
                "best_run": ";".join(best.run_dirs()), "best_runs": best.runs,
                "official": _official_note(first.get("paper_official"), variants, best, metric,
                                           _digits(load_published()[table]) if known else 1),
            })
    return entries


def _official_note(official: Optional[Dict], variants, best, metric: Optional[str],
                   digits: int) -> str:
    """Whether a grid's chosen setting is the official run script's one (``paper.official``
    of the preset); the official setting's own number when it is not."""
    if not official or len(variants) < 2:
        return ""
    point = (official.get("active_num"), official.get("prob"))

    def setting(v):
        return (v.runs[0].get("cn_active_num"), v.runs[0].get("cn_prob"))

    if setting(best) == point:
        return "the chosen setting is the official script's"
    off = next((v for v in variants if setting(v) == point), None)
    text = f"the official script's setting (active_num {point[0]}, prob {point[1]})"
    if off is None or metric is None:
        return text + " was not run"
    return text + f" gives {_mean_std(off.mean(metric), off.std(metric), off.n, digits)}"


def _fmt(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mean_std(mean: Optional[float], std: Optional[float], n: int, digits: int) -> str:
    if mean is None:
        return "–"
    if n > 1:
        return f"{mean:.{digits}f} ± {_fmt(std, digits)} (n={n})"
    return f"{mean:.{digits}f}"


def _digits(spec: Dict) -> int:
    values = [v for by_ds in spec["rows"].values() for vs in by_ds.values() for v in vs
              if v is not None]
    return 2 if any(round(v, 1) != v for v in values) else 1


def _run_name(run_dir: str) -> str:
    return Path(run_dir).name or run_dir


def _entry_line(e: Dict, digits: int) -> str:
    direction = "highest" if e["selected_by"] and higher_is_better(e["selected_by"]) else "lowest"
    value = _mean_std(e["ours"], e["std"], e["n"], digits)
    text = (f"- {e['row']} / {e['column']} / {e['dataset']} — {e['match']} "
            f"({e['trained_on']}, {e['backbone']}): **{value}**")
    if e["marks"]:
        text += f" {e['marks']}"
    if e["variants"] > 1:
        kind = (f"{e['runs']} runs" if e["runs"] == e["variants"]
                else f"{e['variants']} settings ({e['runs']} runs, seeds pooled)")
        if e.get("select_on") == "validation":
            text += (f"; chosen from {kind} by lowest validation score "
                     f"({e['validation']:.{digits}f}), its test mCE shown ({e['settings']})")
        else:
            text += (f"; best of {kind} by {direction} "
                     f"{label(e['selected_by']).split(' (')[0]} ({e['settings']})")
    if e.get("official"):
        text += f"; {e['official']}"
    names = ", ".join(_run_name(d) for d in e["best_run"].split(";"))
    return text + f": {names}"


def paper_markdown(entries: Sequence[Dict]) -> str:
    """Markdown tables in the layout of each paper table that has entries; runs on another
    dataset/backbone listed under the table."""
    pub = load_published()
    by_table: Dict[str, List[Dict]] = {}
    unknown = []
    for e in entries:
        if e["match"] == "not in published.yaml":
            unknown.append(e)
        else:
            by_table.setdefault(e["table"], []).append(e)
    out = []
    for table in sorted(by_table, key=table_order):
        spec = pub[table]
        digits = _digits(spec)
        filled = {(e["row"], e["column"], e["dataset"]): e for e in by_table[table]
                  if e["match"] == "cell"}
        beside = {(e["row"], e["column"], e["dataset"]) for e in by_table[table]
                  if e["match"] != "cell"}
        datasets = sorted({e["dataset"] for e in by_table[table]})
        out.append(f"### {spec['title']}\n")
        metrics = [metric_of(table, c) for c in spec["columns"]]
        better = ("higher" if all(higher_is_better(m) for m in metrics) else "lower"
                  if not any(higher_is_better(m) for m in metrics) else "per column")
        out.append("Each cell: published / this framework (difference = ours − published; "
                   f"{better} is better); only runs with the cell's dataset and backbone fill "
                   "a cell; † = runs on another dataset or backbone, listed below.\n")
        for ds in datasets:
            out.append(f"**{ds}**\n")
            out.append("| | " + " | ".join(spec["columns"]) + " |")
            out.append("|---|" + "---|" * len(spec["columns"]))
            for row, by_ds in spec["rows"].items():
                if ds not in by_ds:
                    continue
                cells = []
                for col, value in zip(spec["columns"], by_ds[ds], strict=True):
                    e = filled.get((row, col, ds))
                    text = _fmt(value, digits)
                    if e is not None:
                        diff = "" if e["diff"] is None else f" ({e['diff']:+.{digits}f})"
                        text += (f" / **{_mean_std(e['ours'], e['std'], e['n'], digits)}**"
                                 f"{diff}" + (f" {e['marks']}" if e["marks"] else ""))
                    if (row, col, ds) in beside:
                        text += " †"
                    cells.append(text)
                out.append(f"| {row} | " + " | ".join(cells) + " |")
            out.append("")
        listed = sorted(by_table[table], key=lambda e: (e["row"], e["column"], e["dataset"],
                                                        MATCHES.index(e["match"])))
        lines = [_entry_line(e, digits) for e in listed]
        out.append("Runs per cell (mean ± std over seeds where there are several):\n")
        out.extend(lines)
        if any(e["selected_by"] == "mce" and e["variants"] > 1
               and e.get("select_on") != "validation" for e in listed):
            out.append(f"\nBest of a grid: lowest mCE, {PAPER_PROTOCOL}.")
        if any(e.get("select_on") == "validation" for e in listed):
            out.append(f"\nSetting of a grid: lowest validation score, {VALIDATION_PROTOCOL}; "
                       "the cell shows the test mCE of that choice.")
        out.append("")
    if unknown:
        out.append("### Cells not in published.yaml\n")
        for e in unknown:
            out.append(f"- {e['table']} / {e['row']} / {e['column']} / {e['dataset']}: "
                       f"{e['runs']} run(s)")
        out.append("")
    return "\n".join(out)


@dataclass
class GroupSummary:
    """A group of runs reduced to settings (seeds pooled), its metrics and best setting."""

    group: Group
    variants: List[Variant]
    varying: List[str]
    common: Dict[str, Any]
    metrics: List[str]
    primary: Optional[str]
    best: Optional[Variant]
    select_on: str = "test"  # how ``best`` was chosen: test (primary metric) or validation


def summarize(runs: Sequence[Dict], select_on: str = "test") -> List[GroupSummary]:
    """One summary per experiment (and sweep), sorted by name. ``select_on="validation"``:
    the best setting of a classification group (primary metric mCE) is the one with the lowest
    validation score; other tasks have no validation score and keep their primary metric."""
    out = []
    for group in group_runs(runs):
        variants = pool_seeds(group.runs)
        varying = varying_keys(variants)
        common = {k: v for k, v in variants[0].settings.items()
                  if k not in varying and v is not None and k != "setting_hash"}
        tasks = sorted({str(r.get("task") or "classify") for r in group.runs})
        common = {"task": "/".join(tasks), **common}
        metrics = task_metrics(group.runs)
        primary = primary_metric(group.runs)
        best = None
        how = "validation" if select_on == "validation" and primary == "mce" else "test"
        # a best setting only among runs of one task and dataset (else nothing is comparable)
        if len(variants) > 1 and primary is not None and len(tasks) == 1 \
                and "dataset" not in varying:
            best = best_variant(variants, primary, how)
        out.append(GroupSummary(group, variants, varying, common, metrics, primary, best,
                                how if best is not None else "test"))
    return out


def _best_line(s: GroupSummary) -> str:
    assert s.best is not None and s.primary is not None
    direction = "highest" if higher_is_better(s.primary) else "lowest"
    name = label(s.primary).split(" (")[0]
    value = _mean_std(s.best.mean(s.primary), s.best.std(s.primary), s.best.n, 2)
    if s.select_on == "validation":
        _, what = validation(s.best.runs[0])
        text = (f"Chosen setting: {_settings_text(s.best.settings, s.varying)} — lowest "
                f"validation score ({s.best.validation():.2f}%: {what}"
                f"{', mean over seeds' if s.best.n > 1 else ''}); {VALIDATION_PROTOCOL}; "
                f"its test {name}: {value}%")
        runs = ", ".join(_run_name(d) for d in s.best.run_dirs())
        return text + f". Run{'s' if s.best.n > 1 else ''}: {runs}"
    text = (f"Best setting: {_settings_text(s.best.settings, s.varying)} — {direction} "
            f"{name} ({value}%)")
    ties = [v for v in s.variants if v is not s.best
            and v.mean(s.primary) == s.best.mean(s.primary)]
    if ties:
        text += (f", tied with {len(ties)} other setting{'s' if len(ties) > 1 else ''} "
                 "(ties: lower clean error, then table order)")
    if any(v.n > 1 for v in s.variants):
        text += ", means over seeds compared"
    if s.group.sweep == "appendix_grid":
        text += f"; {PAPER_PROTOCOL}"
    runs = ", ".join(_run_name(d) for d in s.best.run_dirs())
    return text + f". Run{'s' if s.best.n > 1 else ''}: {runs}"


def groups_markdown(summaries: Sequence[GroupSummary],
                    figures: Optional[Dict[str, List[str]]] = None) -> str:
    """A section per group: common settings, a table of settings that vary x the task's metrics
    (mean ± std over seeds, n), the best setting and the group's figures."""
    figures = figures or {}
    out = []
    for s in summaries:
        g = s.group
        out.append(f"### {g.name}\n")
        n_runs = len(g.runs)
        out.append(f"{n_runs} run{'s' if n_runs != 1 else ''}, {len(s.variants)} "
                   f"setting{'s' if len(s.variants) != 1 else ''}. Settings: "
                   + ", ".join(f"{SETTING_NAMES.get(k, k)}={v}" for k, v in s.common.items())
                   + "\n")
        scored = s.select_on == "validation"
        header = [SETTING_NAMES.get(k, k) for k in s.varying] + ["n", "seeds"] + \
            [label(m) for m in s.metrics] + (["validation (%) ↓"] if scored else []) + ["marks"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for v in s.variants:
            cells = [str(v.settings.get(k)) for k in s.varying]
            cells += [str(v.n), ",".join(str(x) for x in v.seeds) or "–"]
            for m in s.metrics:
                text = _mean_std(v.mean(m), v.std(m), 1, 2)
                if v.n > 1 and v.mean(m) is not None:
                    text = f"{v.mean(m):.2f} ± {_fmt(v.std(m), 2)}"
                if v is s.best and m == s.primary:
                    text = f"**{text}**"
                cells.append(text)
            if scored:
                val = [validation_score(r) for r in v.runs]
                mean = sum(val) / len(val)
                std = _std(val)
                cells.append(f"{mean:.2f}" if v.n == 1 else f"{mean:.2f} ± {_fmt(std, 2)}")
            cells.append(" ".join(marks(v.runs)) or "")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if any(v.n > 1 for v in s.variants):
            out.append("Settings run with several seeds: mean ± std (sample std) over n seeds.\n")
        if s.best is not None:
            out.append(_best_line(s) + "\n")
        elif len(s.variants) > 1:
            out.append("No best setting: the runs differ in task or dataset.\n")
        if intervals.has_intervals(s.group.runs):
            out.append(shifts_markdown(s))
        if figures.get(g.slug):
            out.append("Figures: " + ", ".join(figures[g.slug]) + "\n")
    return "\n".join(out)


def _std(values: Sequence[float]) -> Optional[float]:
    if len(values) < 2:
        return None
    mu = sum(values) / len(values)
    return (sum((x - mu) ** 2 for x in values) / (len(values) - 1)) ** 0.5


def shifts_markdown(s: GroupSummary) -> str:
    """Each setting's clean error, mCE and shifts with 95 % intervals."""
    cols = intervals.shift_columns(s.group.runs)
    header = [SETTING_NAMES.get(k, k) for k in s.varying] + ["n"] + [h for _, h in cols]
    out = ["Shifts, 95 % intervals:\n", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
    for v in s.variants:
        cells = [str(v.settings.get(k)) for k in s.varying] + [str(v.n)]
        cells += [intervals.shift_cell(v, key) for key, _ in cols]
        out.append("| " + " | ".join(cells) + " |")
    out.append("\n[lo, hi]: 95 % percentile bootstrap interval over the test images (one run: "
               "from its results.json; seeds: of their mean, from their per_image.npz); "
               "[—]: none recorded.\n")
    return "\n".join(out)


def _model_label(s: GroupSummary, v: Variant) -> str:
    text = s.group.name
    if s.varying:
        text += f": {_settings_text(v.settings, s.varying)}"
    return text + (" (chosen)" if v is s.best else "")


def differences_markdown(summaries: Sequence[GroupSummary]) -> str:
    """Each method minus the basic method of its dataset and backbone, with 95 % intervals;
    empty when there is no such pair."""
    models = [(_model_label(s, v), v) for s in summaries for v in s.variants]
    rows = intervals.differences(models)
    if not rows:
        return ""
    out = ["## Differences\n",
           "Each setting minus the `basic` setting of the same dataset, backbone, training "
           "length and data (points; negative: fewer errors than basic). 95 % interval: Welch t "
           "over seeds when both have ≥ 3 seeds, else a paired bootstrap over the same test "
           "images (per_image.npz; the seeds of a setting averaged per image).\n",
           "| model | baseline | metric | n | difference | 95 % interval | how | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "—" if r["low"] is None else f"[{r['low']:+.2f}, {r['high']:+.2f}]"
        out.append(f"| {r['model']} | {r['baseline']} | {label(r['metric'])} | "
                   f"{r['n_a']} vs {r['n_b']} | {r['diff']:+.2f} | {ci} | {r['how']} | "
                   f"{intervals.verdict(r)} |")
    return "\n".join(out) + "\n"


def _is_style_group(s: GroupSummary) -> bool:
    return any(r.get("style") not in (None, "none") for r in s.group.runs)


def _difference_cell(v: Variant, base: Optional[Variant], metric: str) -> str:
    """``+1.23 [lo, hi]`` of ``v - base`` (points), ``·`` for the baseline itself."""
    if base is None or not v.values(metric) or not base.values(metric):
        return "–"
    if v is base:
        return "·"
    r = intervals.difference(v, base, metric)
    ci = "[—]" if r["low"] is None else f"[{r['low']:+.2f}, {r['high']:+.2f}]"
    return f"{r['diff']:+.2f} {ci}"


def methods_markdown(summaries: Sequence[GroupSummary]) -> str:
    """The method comparison of every group that holds a style method of related work
    (``style=``): per method, clean error and mCE (mean ± std over seeds, 95 % interval) and
    their differences to ``basic`` and to ``cn`` of the same group and protocol."""
    out = []
    for s in (s for s in summaries if _is_style_group(s)):
        def baseline(method: str, v: Variant, s=s) -> Optional[Variant]:
            return next((b for b in s.variants if b.settings.get("method") == method
                         and intervals.comparable(b) == intervals.comparable(v)), None)

        metrics = [m for m in ("clean/error", "mce") if m in s.metrics]
        header = ["method", "position", "n"] + [label(m) for m in metrics]
        header += [f"{label(m)}: {what}" for m in metrics for what in ("− basic", "− cn")]
        out += [f"### Method comparison: {s.group.name}\n",
                "Every figure comes from the runs of this report (no published cell exists "
                "for these methods on this recipe). Values: mean ± std over seeds (n) and the "
                "95 % interval of the mean; differences in points (negative: fewer errors), "
                "with Welch t intervals over seeds when both sides have ≥ 3 seeds, else a "
                "paired bootstrap over the same test images.\n",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for v in s.variants:
            cells = [str(v.settings.get("method")), str(v.settings.get("position")), str(v.n)]
            cells += [intervals.shift_cell(v, m) for m in metrics]
            cells += [_difference_cell(v, baseline(b, v), m) for m in metrics
                      for b in ("basic", "cn")]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def legend_lines(runs: Sequence[Dict]) -> List[str]:
    """The marks used in this report, explained."""
    lines = []
    if any("[synthetic]" in marks([r]) for r in runs):
        lines.append("- `[synthetic]`: trained and tested on generated synthetic data, not the "
                     "paper's dataset.")
    if any("[generated-C]" in marks([r]) for r in runs):
        lines.append("- `[generated-C]`: corruption errors (mCE, heatmaps) measured on a "
                     "corrupted test set generated by snc, not the published -C set.")
    return lines


def markdown(entries: Sequence[Dict], summaries: Sequence[GroupSummary] = (),
             runs: Sequence[Dict] = (), figures: Optional[Dict[str, List[str]]] = None) -> str:
    """The whole report: header, paper tables (if any run names a paper cell), run groups."""
    out = ["# snc report\n"]
    filled = {(e["table"], e["row"], e["column"], e["dataset"]) for e in entries
              if e["match"] == "cell"}
    beside = {(e["table"], e["row"], e["column"], e["dataset"]) for e in entries
              if e["match"] != "cell"}
    out.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {len(summaries)} "
               f"group{'s' if len(summaries) != 1 else ''}; paper cells filled: {len(filled)}; "
               f"cells with runs on another dataset or backbone only: {len(beside - filled)}.\n")
    marks_legend = legend_lines(runs)
    if marks_legend:
        out.extend(marks_legend)
        out.append("")
    out.append("↓: lower is better (errors, mCE); ↑: higher is better (accuracy, mIoU).\n")
    if entries:
        out.append("## Paper tables\n")
        out.append(paper_markdown(entries))
    if summaries:
        out.append("## Runs by experiment\n")
        out.append(groups_markdown(summaries, figures))
        methods = methods_markdown(summaries)
        if methods:
            out.append(methods)
        diffs = differences_markdown(summaries)
        if diffs:
            out.append(diffs)
    from snc.report.selection import markdown as dg_markdown

    dg = dg_markdown(runs)
    if dg:
        out.append(dg)
    if (figures or {}).get(PAPER_FIGURES):
        out.append("## Figures\n")
        out.append("Paper cells: " + ", ".join(figures[PAPER_FIGURES]) + "\n")
    return "\n".join(out).rstrip("\n") + "\n"


def write_csv(entries: Sequence[Dict], path: Path) -> int:
    """Paper cells, one row per (cell, match); returns the number of rows written."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for e in entries:
            writer.writerow({k: e.get(k) for k in CSV_FIELDS})
    return len(entries)


def write_runs_csv(summaries: Sequence[GroupSummary], path: Path) -> int:
    """Every setting of every group x metric (mean, std, n); returns the number of rows."""
    rows = 0
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUNS_CSV_FIELDS)
        writer.writeheader()
        for s in summaries:
            for v in s.variants:
                for m in s.metrics:
                    writer.writerow({
                        "group": s.group.name, "experiment": s.group.experiment,
                        "sweep": s.group.sweep or "", "best": v is s.best, "n": v.n,
                        "seeds": ",".join(str(x) for x in v.seeds),
                        "settings": _settings_text(v.settings, s.varying), "metric": m,
                        "mean": v.mean(m), "std": v.std(m), "marks": " ".join(marks(v.runs)),
                        "run_dirs": ";".join(v.run_dirs())})
                    rows += 1
    return rows
