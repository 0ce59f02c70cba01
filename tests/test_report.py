"""The report of any set of runs: groups, seeds, paper cells, honest counts, readable figures.

Fixed fake ``results.json`` files are written to a temp dir and ``scripts/report.py``'s
``main`` runs on them in-process. The markdown is compared byte for byte with the golden files
``tests/data/report/*.md``. After an intended change of the report, regenerate them with

    SNC_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py

and review the diff (``git diff tests/data/report``) before committing.
"""

import csv
import json
import os
import re
from pathlib import Path

import pytest

from snc.cli.report import main
from snc.corruptions import CORRUPTIONS
from snc.report.collect import (
    best_variant,
    find_results,
    group_runs,
    higher_is_better,
    marks,
    pool_seeds,
    primary_metric,
    sweep_of,
)
from snc.report.tables import compare, groups_markdown, summarize

GOLDEN = Path(__file__).parent / "data" / "report"
UPDATE = os.environ.get("SNC_UPDATE_GOLDEN") == "1"


def classify_run(experiment, base, seed=1, dataset="synthetic", backbone="wrn16_2",
                 active_num=2, prob=0.25, cells=(), corrupted_set="generated", **extra):
    """A classification results.json whose 75 corruption errors are a fixed function of
    ``base``; mCE is their mean, as the engine computes it."""
    errors = {f"corruption/{c}/s{s}/error": round(base + 3.0 * s + 0.5 * i, 4)
              for i, c in enumerate(CORRUPTIONS) for s in range(1, 6)}
    run = {"task": "classify", "experiment": experiment, "dataset": dataset,
           "backbone": backbone, "method": "sncn", "position": "post_addition", "crop": "both",
           "cn_active_num": active_num, "cn_prob": prob, "ibn": "none", "objective": "cn",
           "epochs": 1, "max_steps": None, "seed": seed, "corrupted_set": corrupted_set,
           "paper_cells": [dict(zip(("table", "row", "column", "dataset"), c, strict=True))
                           for c in cells],
           "clean/error": round(base - 10.0, 4),
           "mce": round(sum(errors.values()) / len(errors), 6), **errors}
    for i, c in enumerate(CORRUPTIONS):
        run[f"corruption/{c}/error"] = round(base + 9.0 + 0.5 * i, 4)
    run.update(extra)
    return run


def text_run(experiment, seed, source, target, dataset="imdb_sst2", cells=()):
    return {"task": "text", "experiment": experiment, "dataset": dataset, "backbone": "textcnn",
            "method": "sncn", "position": "default", "crop": "both", "cn_active_num": 1,
            "cn_prob": 0.5, "ibn": "none", "objective": "cn", "epochs": 20, "max_steps": None,
            "seed": seed, "source/accuracy": source, "target/accuracy": target,
            "source/accuracy_last": source - 0.4, "target/accuracy_last": target - 0.9,
            "paper_cells": [dict(zip(("table", "row", "column", "dataset"), c, strict=True))
                            for c in cells]}


def grid_runs():
    """``python train.py -m experiment=demo sweep=appendix_grid`` (no paper cells)."""
    return {f"demo/synthetic-wrn16_2-sncn-post_addition-both-a{a}-p{p}-seed1-0000000{i}":
            classify_run("demo", base, active_num=a, prob=p)
            for i, (a, p, base) in enumerate([(1, 0.25, 41.0), (1, 0.5, 38.5),
                                              (2, 0.25, 40.0), (2, 0.5, 39.25)])}


def mixed_runs():
    runs = dict(grid_runs())
    for seed, base in ((1, 50.0), (2, 51.5), (3, 49.0)):  # python train.py -m sweep=seeds sn=on
        runs[f"runs/synthetic-wrn16_2-sn-seed{seed}-1111111{seed}"] = classify_run(
            None, base, seed=seed, active_num=None, prob=None, method="sn", crop=None,
            objective="ce")
    cells = (("table1", "WideResNet", "SNCN", "cifar10"),
             ("table12", "WideResNet", "SN+CN+Crop", "cifar10"))
    runs["table1_cifar10_wrn40_2_sncn/cifar10-wrn40_2-sncn-post_addition-both-a2-p0.25-seed1-"
         "22222222"] = classify_run("table1_cifar10_wrn40_2_sncn", 12.0, dataset="cifar10",
                                    backbone="wrn40_2", cells=cells, corrupted_set="published")
    runs["table1_cifar10_wrn40_2_sncn/cifar10-wrn16_2-sncn-post_addition-both-a2-p0.25-seed1-"
         "33333333"] = classify_run("table1_cifar10_wrn40_2_sncn", 16.0, dataset="cifar10",
                                    backbone="wrn16_2", cells=cells, corrupted_set="published")
    runs["table4_sncn/imdb_sst2-textcnn-sncn-seed1234-44444444"] = text_run(
        "table4_sncn", 1234, 86.125, 74.5,
        cells=(("table4", "SNCN", "Source", "imdb_sst2"), ("table4", "SNCN", "Target",
                                                           "imdb_sst2")))
    return runs


def write_runs(root: Path, runs: dict) -> Path:
    for name, results in runs.items():
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(results))
    return root


def run_report(tmp_path, runs, capsys):
    out = tmp_path / "report"
    assert main([str(write_runs(tmp_path / "outputs", runs)), "--out", str(out)]) == 0
    return out, capsys.readouterr().out


def check_golden(text: str, name: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with SNC_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(), f"report differs from {path} (SNC_UPDATE_GOLDEN=1 updates)"


def check_counts(out: Path, printed: str) -> None:
    """The last printed line counts exactly the files in ``out``; every PNG decodes."""
    from PIL import Image

    last = printed.strip().splitlines()[-1]
    m = re.search(r"and (\d+) PNG\(s\): (\d+) heatmap\(s\), (\d+) bar chart\(s\)", last)
    assert m, last
    pngs = sorted(out.glob("*.png"))
    assert int(m.group(1)) == len(pngs)
    assert int(m.group(2)) == len(list(out.glob("heatmap_*.png")))
    assert int(m.group(3)) == len(pngs) - int(m.group(2))
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    rows = int(re.search(r"runs\.csv \((\d+) rows\)", last).group(1))
    assert rows == len(list(csv.DictReader(open(out / "runs.csv"))))
    cells = int(re.search(r"report\.csv \((\d+) paper-cell rows\)", last).group(1))
    assert cells == len(list(csv.DictReader(open(out / "report.csv"))))
    md = (out / "report.md").read_text()
    for png in pngs:  # every figure written is named in the report
        assert png.name in md


def test_appendix_grid_without_paper_cells(tmp_path, capsys):
    out, printed = run_report(tmp_path, grid_runs(), capsys)
    md = (out / "report.md").read_text()
    check_golden(md, "grid.md")
    assert "No run reproduces a paper cell" not in printed
    assert "selected on the test corruptions (paper protocol)" in md
    assert "| 1 | 0.5 | 1 | 1 |" in md and "[synthetic] [generated-C]" in md
    check_counts(out, printed)
    assert sorted(p.name for p in out.glob("*.png")) == ["bars_demo-appendix_grid.png",
                                                         "heatmap_demo-appendix_grid.png"]
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 4 * 2  # 4 settings x (clean error, mCE)
    best = [r for r in rows if r["best"] == "True"]
    assert {r["settings"] for r in best} == {"active_num=1, prob=0.5"}


def test_mixed_runs_golden_counts_and_cells(tmp_path, capsys):
    out, printed = run_report(tmp_path, mixed_runs(), capsys)
    md = (out / "report.md").read_text()
    check_golden(md, "mixed.md")
    check_counts(out, printed)
    # paper cells: only the WRN-40-2 run fills the WRN-40-2 cell; the WRN-16-2 one is beside it
    rows = list(csv.DictReader(open(out / "report.csv")))
    by = {(r["table"], r["column"], r["match"]): r for r in rows}
    assert set(by) == {("table1", "SNCN", "cell"), ("table1", "SNCN", "other backbone"),
                       ("table12", "SN+CN+Crop", "cell"),
                       ("table12", "SN+CN+Crop", "other backbone"),
                       ("table4", "Source", "cell"), ("table4", "Target", "cell")}
    assert by[("table1", "SNCN", "cell")]["backbone"] == "wrn40_2"
    assert float(by[("table1", "SNCN", "cell")]["diff"]) == pytest.approx(
        float(by[("table1", "SNCN", "cell")]["ours"]) - 16.9)
    assert by[("table1", "SNCN", "other backbone")]["diff"] == ""
    assert by[("table1", "SNCN", "other backbone")]["backbone"] == "wrn16_2"
    assert float(by[("table4", "Target", "cell")]["ours"]) == 74.5
    assert "74.91 / **74.50** (-0.41)" in md  # accuracies keep the published two decimals
    # seeds pooled: mean ± sample std with n, never best-of-seeds
    seeds = [r for r in csv.DictReader(open(out / "runs.csv")) if r["group"] == "runs (seeds)"]
    mce = [r for r in seeds if r["metric"] == "mce"]
    assert len(mce) == 1 and mce[0]["n"] == "3" and mce[0]["seeds"] == "1,2,3"
    single = [classify_run(None, b)["mce"] for b in (50.0, 51.5, 49.0)]
    assert float(mce[0]["mean"]) == pytest.approx(sum(single) / 3)
    assert float(mce[0]["std"]) == pytest.approx(1.2583057, abs=1e-6)
    assert "| 3 | 1,2,3 | 40.17 ± 1.26 | 62.67 ± 1.26 |" in md


def test_report_again_into_the_same_folder(tmp_path, capsys):
    out, _ = run_report(tmp_path, mixed_runs(), capsys)
    assert len(list(out.glob("*.png"))) == 6
    write_runs(tmp_path / "grid_only", grid_runs())
    assert main([str(tmp_path / "grid_only"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "removed 6 figure(s) of an earlier report" in printed
    check_counts(out, printed)
    assert (out / "report.md").read_text() == (GOLDEN / "grid.md").read_text()


def test_table_filter(tmp_path, capsys):
    write_runs(tmp_path / "outputs", mixed_runs())
    out = tmp_path / "t4"
    assert main([str(tmp_path / "outputs"), "--out", str(out), "--table", "table4"]) == 0
    printed = capsys.readouterr().out
    check_counts(out, printed)
    md = (out / "report.md").read_text()
    assert "Table 4" in md and "Table 1:" not in md and "### demo" not in md
    assert main([str(tmp_path / "outputs"), "--out", str(out), "--table", "table99"]) == 1


def test_seeds_are_pooled_and_best_is_by_mean(tmp_path):
    runs = [classify_run("g", 40.0, seed=1, active_num=1), classify_run("g", 50.0, seed=2,
                                                                        active_num=1),
            classify_run("g", 44.0, seed=1, active_num=2), classify_run("g", 44.0, seed=2,
                                                                        active_num=2)]
    variants = pool_seeds(runs)
    assert [v.n for v in variants] == [2, 2]
    # best-of-seeds would pick active_num=1 (seed 1: 40); the mean says active_num=2
    assert best_variant(variants, "mce").settings["cn_active_num"] == 2


def test_higher_is_better_metrics_and_recorded_sweep():
    assert higher_is_better("target/accuracy") and higher_is_better("source/miou")
    assert not higher_is_better("mce") and not higher_is_better("clean/error_last20")
    runs = [text_run("t", 1, 85.0, 70.0), text_run("t", 1, 84.0, 73.0)]
    runs[1]["cn_prob"] = 0.25
    assert primary_metric(runs) == "target/accuracy"
    assert best_variant(pool_seeds(runs), "target/accuracy").settings["cn_prob"] == 0.25
    grid = list(grid_runs().values())
    assert sweep_of(grid) == "appendix_grid" and sweep_of(grid[:3]) is None
    for r in grid:
        r["sweep"] = "my_sweep"
    assert [g.name for g in group_runs(grid)] == ["demo (my_sweep)"]


def test_other_dataset_is_beside_the_cell(tmp_path):
    cells = (("table1", "WideResNet", "SNCN", "cifar10"),)
    runs = [classify_run("p", 40.0, backbone="wrn40_2", cells=cells)]  # synthetic data
    (entry,) = compare(runs)
    assert entry["match"] == "other dataset" and entry["diff"] is None
    assert entry["marks"] == "[synthetic] [generated-C]"


def test_segment_runs_higher_is_better_and_generated_scenes_marked():
    runs = [{"task": "segment", "experiment": "segment_demo", "dataset": "generated",
             "backbone": "resnet50", "method": m, "seed": 1, "source/miou": s,
             "target/miou": t, "paper_cells": []} for m, s, t in (("basic", 60.0, 20.0),
                                                                   ("sncn", 58.0, 30.0))]
    (summary,) = summarize(runs)
    assert summary.metrics == ["source/miou", "target/miou"]
    assert summary.primary == "target/miou" and summary.best.settings["method"] == "sncn"
    assert marks(runs) == ["[synthetic]"]
    md = groups_markdown([summary])
    assert "target mIoU (%) ↑" in md and "highest target mIoU" in md


def test_find_results_sets_run_dir(tmp_path):
    write_runs(tmp_path, {"a/r1": classify_run("a", 40.0)})
    (run,) = find_results([tmp_path])
    assert run["run_dir"] == str(tmp_path / "a" / "r1")


def test_paper_cell_of_a_grid_says_whether_it_is_the_official_setting():
    cells = (("table1", "WideResNet", "SNCN", "cifar10"),)
    official = {"active_num": 2, "prob": 0.25}
    grid = [classify_run("p", base, dataset="cifar10", backbone="wrn40_2", active_num=a,
                         prob=p, cells=cells, paper_official=official)
            for a, p, base in ((1, 0.25, 41.0), (1, 0.5, 38.5), (2, 0.25, 40.0), (2, 0.5, 39.0))]
    (entry,) = compare(grid)
    assert entry["settings"] == "active_num=1, prob=0.5"  # best of grid by mCE
    official_mce = grid[2]["mce"]
    assert entry["official"] == (f"the official script's setting (active_num 2, prob 0.25) "
                                 f"gives {official_mce:.1f}")
    (entry,) = compare([grid[0], grid[1]])  # the official setting was not run
    assert entry["official"] == "the official script's setting (active_num 2, prob 0.25) " \
        "was not run"
    (entry,) = compare([grid[2], grid[0]])
    assert entry["official"] == "the chosen setting is the official script's"
