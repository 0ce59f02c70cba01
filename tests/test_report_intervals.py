"""The report's intervals on fixed fake runs: seeds aggregated, shifts with 95 % intervals,
differences to the basic method, and a grid's setting chosen on validation corruptions.

Each fake run directory holds what the evaluator writes: ``config.yaml``, ``results.json``
(metrics computed from the per-image arrays by the same code as the engine, ``ci95``,
``bootstrap``, ``shifts``) and ``per_image.npz``. The markdown is compared byte for byte with
``tests/data/report/{seeds,validation}.md`` (``SNC_UPDATE_GOLDEN=1`` rewrites them).
"""

import json
import zlib

import numpy as np
import pytest
import yaml
from test_report import check_counts, check_golden, classify_run, write_runs

from snc.cli.report import main
from snc.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS
from snc.eval import stats
from snc.eval.robustness import corruption_metrics, error_percent
from snc.report.collect import find_results, pool_seeds
from snc.report.plots import yerr

N = 300          # test images
N_SINGLE = 120   # a CIFAR-10.1-like single set
RESAMPLES = 200  # what the fake evaluator recorded in "bootstrap"
BAR = ("blue_noise_sample", "brownish_noise", "checkerboard_cutout")  # a small -C-bar block


def _err(a):
    return error_percent(int((~a).sum()), a.size)


def fake_run(experiment, method, seed, clean_err, flip, extra_flip=None, bar_flip=None,
             active_num=None, prob=None, sweep=None, lr=0.1, dataset="cifar10"):
    """``(results, config, per_image)`` of one run. Per-image correctness is drawn from a
    generator seeded by the run's name; corrupted copies are the clean answers, each flipped
    wrong with ``flip * severity / 5`` (+ a little per corruption)."""
    name = f"{experiment}-{method}-{active_num}-{prob}-{seed}-{lr}"
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    clean = rng.random(N) >= clean_err
    arrays = {"clean": clean}
    names = list(CORRUPTIONS) + (list(EXTRA_CORRUPTIONS) if extra_flip is not None else [])
    for i, c in enumerate(names):
        f = extra_flip if c in EXTRA_CORRUPTIONS else flip
        for s in range(1, 6):
            arrays[f"cifar10c/{c}/s{s}"] = clean & (rng.random(N) >= f * s / 5 + 0.004 * i)
    arrays["cifar10_1"] = rng.random(N_SINGLE) >= clean_err + 0.05
    c_sets = {(k.split("/")[1], int(k.split("/")[2][1:])): v for k, v in arrays.items()
              if k.startswith("cifar10c/")}
    metrics = corruption_metrics({k: _err(v) for k, v in c_sets.items()})
    ci = stats.mce_interval(clean, c_sets, resamples=RESAMPLES)
    shifts = {
        "cifar10c": {"kind": "corruptions", "title": "CIFAR-10-C", "set": "published",
                     "num_images": N, **metrics,
                     "ci95": {k: list(v) for k, v in ci.items() if k != "clean/error"}},
        "cifar10_1": {"kind": "single", "title": "CIFAR-10.1 (v6)", "num_images": N_SINGLE,
                      "error": _err(arrays["cifar10_1"]),
                      "ci95": {"error": list(stats.error_interval(arrays["cifar10_1"],
                                                                  resamples=RESAMPLES))}},
    }
    if bar_flip is not None:
        bar = {(c, s): clean & (rng.random(N) >= bar_flip * s / 5) for c in BAR
               for s in range(1, 6)}
        for (c, s), v in bar.items():
            arrays[f"cifar10c_bar/{c}/s{s}"] = v
        bar_errors = {k: _err(v) for k, v in bar.items()}
        shifts["cifar10c_bar"] = {
            "kind": "corruptions", "title": "CIFAR-10-C-bar", "set": "generated",
            "num_images": N, "mce": sum(bar_errors.values()) / len(bar_errors),
            "ci95": {}}
    results = {"task": "classify", "experiment": experiment, "dataset": dataset,
               "backbone": "wrn40_2", "method": method,
               "position": "default" if method == "basic" else "post_addition",
               "crop": "both" if method != "basic" else None, "cn_active_num": active_num,
               "cn_prob": prob, "ibn": "none", "objective": "ce" if method == "basic" else "cn",
               "epochs": 200,
               "max_steps": None, "seed": seed, "corrupted_set": "published",
               "paper_cells": [], "sweep": sweep, "clean/error": _err(clean), **metrics,
               "ci95": {"clean/error": list(ci["clean/error"]), "mce": list(ci["mce"]),
                        **{k: list(v) for k, v in ci.items() if k.startswith("corruption/")}},
               "bootstrap": {"resamples": RESAMPLES, "seed": 0, "level": 0.95},
               "shifts": shifts}
    config = {"seed": seed, "experiment_name": experiment, "optimizer": {"lr": lr},
              "method": method, "cn": {"active_num": active_num, "prob": prob},
              "paths": {"output_dir": "outputs"}}
    return results, config, arrays


def write_fake(root, runs):
    """``{run dir name: (results, config, per_image)}`` -> run directories under ``root``."""
    for name, (results, config, arrays) in runs.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(results))
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        if arrays is not None:
            np.savez(d / "per_image.npz", **arrays)
    return root


def seed_runs():
    """3 seeds x 2 methods: ``python train.py -m sweep=seeds experiment=cmp method=basic,sncn``."""
    runs = {}
    for seed in (1, 2, 3):
        runs[f"cmp/basic-seed{seed}"] = fake_run("cmp", "basic", seed, 0.06 + 0.005 * seed,
                                                 0.45, sweep="seeds")
        runs[f"cmp/sncn-seed{seed}"] = fake_run("cmp", "sncn", seed, 0.06 + 0.004 * seed, 0.25,
                                                active_num=2, prob=0.25, sweep="seeds")
    return runs


GRID = [(1, 0.25, 0.30, 0.20), (1, 0.5, 0.22, 0.40), (2, 0.25, 0.26, 0.15),
        (2, 0.5, 0.28, 0.30)]  # (active_num, prob, benchmark flip, extra-corruption flip)


def validation_runs():
    """An appendix grid whose runs evaluated ImageNet-C's extra corruptions, and a basic run."""
    runs = {f"grid/sncn-a{a}-p{p}": fake_run("grid", "sncn", 1, 0.07, f, extra_flip=v,
                                             active_num=a, prob=p, sweep="appendix_grid")
            for a, p, f, v in GRID}
    runs["base/basic"] = fake_run("base", "basic", 1, 0.07, 0.45, extra_flip=0.45)
    return runs


def report(tmp_path, runs, capsys, *extra):
    out = tmp_path / "report"
    code = main([str(write_fake(tmp_path / "outputs", runs)), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, out, captured


def test_seeds_aggregated_shifts_and_differences_golden(tmp_path, capsys):
    code, out, cap = report(tmp_path, seed_runs(), capsys)
    assert code == 0
    md = (out / "report.md").read_text()
    check_golden(md, "seeds.md")
    check_counts(out, cap.out)
    runs = find_results([tmp_path / "outputs"])
    variants = pool_seeds(runs)
    assert [v.n for v in variants] == [3, 3]  # seeds are replicates, the method a setting
    basic, sncn = sorted(variants, key=lambda v: v.settings["method"])
    mce_a, mce_b = sncn.values("mce"), basic.values("mce")
    d = stats.seed_difference(mce_a, mce_b)
    assert f"| {d['diff']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | Welch t over seeds " \
           "(3 vs 3) | interval excludes 0 |" in md
    s = stats.seed_summary(mce_a)
    assert f"{s['mean']:.2f} ± {s['std']:.2f} (n=3)" in md
    # never best-of-seeds: the table's number is the mean, not the minimum
    assert f"{min(mce_a):.2f} ±" not in md


def test_seed_mean_interval_is_the_bootstrap_of_the_seeds_per_image_files(tmp_path, capsys):
    code, out, _ = report(tmp_path, seed_runs(), capsys)
    md = (out / "report.md").read_text()
    runs = seed_runs()
    clean = np.stack([runs[f"cmp/sncn-seed{s}"][2]["clean"] for s in (1, 2, 3)])
    lo, hi = stats.error_interval(clean, resamples=RESAMPLES)
    errs = [runs[f"cmp/sncn-seed{s}"][0]["clean/error"] for s in (1, 2, 3)]
    summary = stats.seed_summary(errs)
    assert f"{summary['mean']:.2f} ± {summary['std']:.2f} (n=3) [{lo:.2f}, {hi:.2f}]" in md


def test_validation_selection_golden(tmp_path, capsys):
    code, out, cap = report(tmp_path, validation_runs(), capsys, "--select-on", "validation")
    assert code == 0, cap.err
    md = (out / "report.md").read_text()
    check_golden(md, "validation.md")
    check_counts(out, cap.out)
    # the extra corruptions choose (2, 0.25: lowest extra flip); the test mCE would choose
    # (1, 0.5): the choice differs, and the cell reports the chosen setting's test mCE
    assert "Chosen setting: active_num=2, prob=0.25 — lowest validation score" in md
    assert "selected on the test corruptions (paper protocol)" not in md
    chosen = validation_runs()["grid/sncn-a2-p0.25"][0]
    assert f"its test mCE: {chosen['mce']:.2f}%" in md
    # one seed each: the difference to basic is a paired bootstrap over the images
    assert "paired bootstrap over 300 images (200 resamples)" in md


def test_select_on_test_is_the_paper_protocol(tmp_path, capsys):
    code, out, _ = report(tmp_path, validation_runs(), capsys)
    md = (out / "report.md").read_text()
    assert code == 0
    assert "Best setting: active_num=1, prob=0.5 — lowest mCE" in md
    assert "selected on the test corruptions (paper protocol)" in md


def test_validation_corruptions_are_not_in_the_test_mce():
    results, _, arrays = fake_run("g", "sncn", 1, 0.07, 0.3, extra_flip=0.1)
    assert f"corruption/{EXTRA_CORRUPTIONS[0]}/error" in results
    benchmark = [results[f"corruption/{c}/error"] for c in CORRUPTIONS]
    everything = benchmark + [results[f"corruption/{c}/error"] for c in EXTRA_CORRUPTIONS]
    assert results["mce"] == pytest.approx(sum(benchmark) / 15)
    assert results["mce"] != pytest.approx(sum(everything) / 19)


def test_validation_from_a_c_bar_block_and_missing_keys(tmp_path, capsys):
    runs = {f"g/a{a}": fake_run("g", "sncn", 1, 0.07, f, bar_flip=b, active_num=a, prob=0.5)
            for a, f, b in ((1, 0.2, 0.5), (2, 0.3, 0.1))}
    code, out, cap = report(tmp_path, runs, capsys, "--select-on", "validation")
    assert code == 0, cap.err
    md = (out / "report.md").read_text()
    assert "Chosen setting: active_num=2 — lowest validation score" in md
    assert "CIFAR-10-C-bar mCE" in md
    bare = {f"h/a{a}": fake_run("h", "sncn", 1, 0.07, f, active_num=a, prob=0.5)
            for a, f in ((1, 0.2), (2, 0.3))}
    code, _, cap = report(tmp_path / "bare", bare, capsys, "--select-on", "validation")
    assert code == 2
    for needed in ("corruption/speckle_noise/error", "shifts.cifar10c_bar.mce",
                   "evaluate.validation=extra", "shifts=[cifar10c_bar]"):
        assert needed in cap.err


def test_old_runs_without_intervals_print_dashes(tmp_path, capsys):
    runs = {"old/basic": classify_run("old", 45.0, dataset="cifar10", backbone="wrn40_2",
                                      method="basic"),
            "old/sncn": classify_run("old", 40.0, dataset="cifar10", backbone="wrn40_2")}
    out = tmp_path / "report"
    assert main([str(write_runs(tmp_path / "o", runs)), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Shifts, 95 % intervals" not in md  # nothing recorded: no table of dashes
    assert "| old: method=sncn (chosen) | old: method=basic | mCE (%) ↓ | 1 vs 1 | -5.00 | — " \
           "| — (< 3 seeds, no per_image.npz) | — |" in md
    # a new run beside an old one: the old one's intervals are dashes, never invented
    new = fake_run("old", "sncn", 1, 0.07, 0.3, active_num=2, prob=0.25)
    write_fake(tmp_path / "o", {"old/new": new})
    assert main([str(tmp_path / "o"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Shifts, 95 % intervals" in md and "[—]" in md


def test_per_image_files_that_disagree_with_results_are_not_used(tmp_path, capsys):
    runs = {"x/basic": fake_run("x", "basic", 1, 0.07, 0.45),
            "x/sncn": fake_run("x", "sncn", 1, 0.07, 0.25)}
    runs["x/sncn"][0]["mce"] -= 1.0  # results.json no longer what the arrays give
    runs["x/sncn"][0]["shifts"]["cifar10c"]["mce"] -= 1.0
    code, out, _ = report(tmp_path, runs, capsys)
    md = (out / "report.md").read_text()
    assert "per_image.npz ≠ results.json" in md


def test_config_differences_other_than_the_seed_are_settings(tmp_path):
    runs = {}
    for seed in (1, 2):
        for lr in (0.1, 0.05):
            results, config, _ = fake_run("lr", "sncn", seed, 0.07, 0.3, lr=lr)
            runs[f"lr/s{seed}-lr{lr}"] = (results, config, None)
    write_fake(tmp_path, runs)
    variants = pool_seeds(find_results([tmp_path]))
    assert sorted(v.n for v in variants) == [2, 2]
    assert len({v.settings["setting_hash"] for v in variants}) == 2


def test_yerr_std_and_interval():
    assert yerr([10.0, 20.0], [None, None]) is None
    assert yerr([10.0, 20.0], [0.5, (18.0, 23.0)]) == [[0.5, 2.0], [0.5, 3.0]]
    assert yerr([None, 20.0], [1.0, None]) is None
