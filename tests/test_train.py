"""The entry point: config composition and validation, a tiny end-to-end run, tracking files,
kill-and-resume, multirun."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from snc.engine import run as run_entry
from snc.engine.runner import run_dir_of as run_dir_for
from snc.engine.runner import validate
from snc.models import get_backbone_spec
from snc.tasks.classify import build_network
from snc.tasks.objectives import jsd

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


# textcnn is the text task's network (tests/test_text.py), not a classification backbone;
# torchvision/timm networks are not registered backbones (tests/test_attach*.py)
@pytest.mark.parametrize("backbone", [b for b in options("backbone")
                                      if b not in ("textcnn", "torchvision", "timm")])
def test_every_backbone_and_position_composes_and_builds(make_cfg, backbone):
    spec = get_backbone_spec(backbone)
    for position in options("position"):
        cfg = make_cfg(f"backbone={backbone}", f"position={position}", "sn=on", "cn=on",
                       tiny=False)
        if position != "default" and position not in spec.positions:
            with pytest.raises(ValueError, match=f"valid positions: {spec.positions[0]}"):
                build_network(cfg, 10)
            continue
        validate(cfg)
        assert build_network(cfg, 10).cn_controller is not None


@pytest.mark.parametrize("group", ["dataset", "sn", "cn", "crop", "augmix", "augment", "ibn",
                                   "objective",
                                   "logger", "sweep", "debug"])  # experiment: test_presets.py
def test_every_group_option_composes(make_cfg, group):
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "dataset" and option == "npz":
            overrides.append("dataset.path=x.npz")
        if (group == "objective" and option in ("cn", "consistency")) or (
                group == "crop" and option != "neither"):
            overrides.append("cn=on")
        if group == "objective" and option == "augmix":
            overrides.append("augmix=on")
        cfg = make_cfg(*overrides, tiny=False)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        if group not in ("ibn",) or option == "none":
            validate(cfg)


def test_defaults_reproduce_the_official_cifar_settings(make_cfg):
    cfg = make_cfg("dataset=cifar100", "backbone=wrn40_2", "sn=on", "cn=on", tiny=False)
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (0.1, 0.9, True)
    assert cfg.optimizer.weight_decay == 5e-4 and cfg.batch_size == 128 and cfg.epochs == 100
    assert cfg.schedule.name == "cosine" and cfg.schedule.min_lr == 1e-6
    assert list(cfg.dataset.mean) == [0.5] * 3 and cfg.dataset.crop_padding == 4
    assert validate(cfg).objective == "cn"
    dense = make_cfg("dataset=cifar10", "backbone=densenet40_12", tiny=False)
    assert dense.epochs == 200 and dense.optimizer.weight_decay == 1e-4  # official recipe


@pytest.mark.parametrize("overrides, match", [
    (["ibn=a"], "ibn=a applies to ImageNet ResNets"),
    (["objective=consistency"], "needs CrossNorm units: add cn=on"),
    (["objective=augmix"], "add augmix=on"),
    (["augmix=on", "cn=on", "objective=cn"], "use objective=augmix"),
    (["objective=fancy"], None),
])
def test_invalid_combinations_fail_with_the_fix(make_cfg, overrides, match):
    if match is None:  # an unknown option is refused by Hydra itself, naming the options
        with pytest.raises(Exception, match="fancy"):
            make_cfg(*overrides)
        return
    with pytest.raises(ValueError, match=match):
        validate(make_cfg(*overrides))


def test_build_time_errors_name_the_fix(make_cfg):
    cfg = make_cfg("position=after_conv", "sn=on")
    with pytest.raises(ValueError, match="unknown position 'after_conv' for backbone wrn16_2"):
        run_entry(cfg)
    cfg = make_cfg("cn=on", "cn.active_num=99")
    with pytest.raises(ValueError, match="cn.active_num=99 but the model has"):
        run_entry(cfg)
    cfg = make_cfg("dataset=npz", "dataset.path=/nonexistent.npz", tiny=False)
    with pytest.raises(FileNotFoundError, match="train_images, train_labels"):
        run_entry(cfg)


def test_jsd_matches_the_official_formula():
    torch.manual_seed(0)
    logits = [torch.randn(5, 7) for _ in range(3)]
    p = [torch.softmax(z, 1) for z in logits]
    m = ((p[0] + p[1] + p[2]) / 3).clamp(1e-7, 1)
    expected = sum((q * (q.log() - m.log())).sum(1).mean() for q in p) / 3
    assert torch.allclose(jsd(logits), expected, atol=1e-6)
    assert jsd([logits[0]] * 3).abs() < 1e-6


def test_tiny_end_to_end_run(make_cfg):
    cfg = make_cfg("sn=on", "cn=on", "crop=both", "cn.prob=0.5", "epochs=4", "optimizer.lr=0.05")
    results = run_entry(cfg)
    run_dir = Path(results["run_dir"])
    assert run_dir == run_dir_for(cfg)
    for name in ("config.yaml", "metrics.jsonl", "results.json", "train.log", "ckpt/last.pt"):
        assert (run_dir / name).exists(), name
    stored = json.loads((run_dir / "results.json").read_text())
    errors = [k for k in stored if re.fullmatch(r"corruption/\w+/s[1-5]/error", k)]
    assert len(errors) == 75 and 0 <= stored["mce"] <= 100
    assert stored["mce"] == pytest.approx(sum(stored[k] for k in errors) / 75)
    assert 0 <= stored["clean/error"] <= 100 and stored["corrupted_set"] == "generated"
    assert stored["train/final_epoch_loss"] < stored["train/first_epoch_loss"]  # it learns
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in line for line in lines)
    assert [line["epoch"] for line in lines if "epoch" in line] == [1, 2, 3, 4]
    # a finished run is returned, not retrained
    assert run_entry(cfg) == stored
    with pytest.raises(FileExistsError, match="already holds a run"):
        run_entry(make_cfg("sn=on", "cn=on", "crop=both", "cn.prob=0.5", "epochs=4",
                           "optimizer.lr=0.05", "resume=false"))


def test_wandb_offline_files(make_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_cfg("logger=wandb", "epochs=1", "evaluate_corruptions=false")
    results = run_entry(cfg)
    runs = list((Path(results["run_dir"]) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("objective_overrides", [
    ["cn=on", "objective=consistency", "cn.prob=1.0", "crop=style"],
    ["cn=on", "augmix=on", "cn.prob=1.0"],
])
def test_consistency_and_augmix_objectives_run(make_cfg, objective_overrides):
    cfg = make_cfg(*objective_overrides, "epochs=1", "evaluate_corruptions=false", "log_every=1",
                   "dataset.num_train=64")
    results = run_entry(cfg)
    lines = [json.loads(x) for x in (Path(results["run_dir"]) / "metrics.jsonl").read_text()
             .splitlines() if "train/loss" in x]
    assert any("train/jsd" in line or "train/cn_jsd" in line for line in lines)


def test_kill_and_resume_equals_an_uninterrupted_run(make_cfg, kill_run, tmp_path):
    overrides = ["sn=on", "cn=on", "crop=content", "cn.prob=0.5", "epochs=3",
                 "evaluate_corruptions=false"]
    straight = run_entry(make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "a")))

    cfg = make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "b"))
    kill_run(cfg, at=3)
    assert not (run_dir_for(cfg) / "results.json").exists()
    resumed = run_entry(cfg)
    for key in ("clean/error", "train/final_epoch_loss", "train/first_epoch_loss"):
        assert resumed[key] == straight[key], key
    a = torch.load(Path(straight["run_dir"]) / "ckpt/last.pt", weights_only=True)["model"]
    b = torch.load(Path(resumed["run_dir"]) / "ckpt/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_multirun_writes_complete_run_dirs(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "seed=1,2",
           f"paths.output_dir={tmp_path / 'out'}", f"paths.data_dir={tmp_path / 'data'}",
           "device=cpu", "logger=none", "progress=false", "backbone=wrn16_2",
           "+backbone.overrides.depth=10", "+backbone.overrides.widen_factor=1",
           "dataset.num_train=64", "dataset.num_test=32", "epochs=1", "batch_size=32",
           "evaluate_corruptions=false", "experiment_name=sweeptest"]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True, timeout=300)
    runs = sorted((tmp_path / "out" / "sweeptest").iterdir())
    assert len(runs) == 2 and [r.name.split("-seed")[1][0] for r in runs] == ["1", "2"]
    for r in runs:
        assert json.loads((r / "results.json").read_text())["seed"] in (1, 2)
        assert (r / "config.yaml").exists() and (r / "metrics.jsonl").exists()


def test_bench_script_reports_every_variant_and_the_speedup(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "backbone=wrn16_2",
           "+backbone.overrides.depth=10", "+backbone.overrides.widen_factor=1", "sn=on",
           "cn=on", "device=cpu", "batch_size=16", "eval_batch_size=32", "+bench.steps=2",
           "+bench.warmup=1", "+bench.images=64"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path,
                         timeout=300).stdout.strip().splitlines()
    names = [line.split()[0] for line in out]
    assert {"plain", "+sn", "+cn", "requested", "reference"} <= set(names)
    assert out[-1].startswith("speedup_vs_reference=") and float(out[-1].split("=")[1]) > 0
