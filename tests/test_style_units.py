"""The style methods of related work in CrossNorm's slot: config, placement, controller, runs.

The ops themselves (formulas, statistics, draws, gradients) are tested in test_style_ops.py.
"""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from snc.config import CONFIG_DIR, unit_options
from snc.engine import run
from snc.engine.identity import config_hash
from snc.models import attach, build_model
from snc.ops import (
    DSUOptions,
    EFDMixOptions,
    MixStyleOptions,
    PermutedAdaINOptions,
)
from snc.ops.style import StyleUnit

TINY_NET = {"depth": 10, "widen_factor": 1}
METHODS = {"mixstyle": MixStyleOptions, "dsu": DSUOptions, "efdmix": EFDMixOptions,
           "padain": PermutedAdaINOptions}


def styled(model):
    return [m for m in model.modules() if isinstance(m, StyleUnit)]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_composes_to_its_typed_options(name):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"style={name}", "style.p=1.0"])
    units = unit_options(cfg)
    assert units.style == METHODS[name](p=1.0) and units.cn is None
    assert units.perturbation is units.style and units.label == name


def test_an_option_of_another_method_fails_at_compose_time():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="alpha"):
            compose("train", overrides=["style=dsu", "style.alpha=0.3"])
        with pytest.raises(ConfigCompositionException, match="p"):
            compose("train", overrides=["style.p=0.3"])  # style=none has no options


def test_style_none_leaves_the_run_hash_as_before(make_cfg):
    cfg = make_cfg()
    without = OmegaConf.create(OmegaConf.to_container(cfg))
    del without["style"]  # a config from before the group existed
    assert config_hash(cfg) == config_hash(without)
    assert config_hash(make_cfg("style=mixstyle")) != config_hash(cfg)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_units_go_where_cn_would_and_are_the_identity_in_eval(name):
    options = METHODS[name](p=1.0)
    torch.manual_seed(0)
    plain = build_model("wrn16_2", 10, **TINY_NET)
    torch.manual_seed(0)
    model = build_model("wrn16_2", 10, cn=options, **TINY_NET)
    with_cn = build_model("wrn16_2", 10, cn=True, **TINY_NET)
    assert len(styled(model)) == len(with_cn.cn_controller) == len(model.cn_controller) > 0
    ctrl = model.cn_controller
    assert ctrl.active_num == len(ctrl) and ctrl.prob == 1.0  # every unit, its own coin
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    plain.eval()
    with ctrl.step():
        assert torch.allclose(model(x), plain(x), atol=1e-6)  # no parameters, no effect
    model.train()
    plain.train()
    with ctrl.step() as on:
        assert on is True and all(u.active for u in styled(model))
        changed = not torch.allclose(model(x), plain(x), atol=1e-4)
    assert changed and not any(u.active for u in styled(model))


def test_stages_and_torchvision_families_take_them_too():
    staged = build_model("wrn16_2", 10, cn=MixStyleOptions(), blocks=[1, 2], **TINY_NET)
    full = build_model("wrn16_2", 10, cn=MixStyleOptions(), **TINY_NET)
    assert 0 < len(styled(staged)) < len(styled(full))
    net = attach(torchvision.models.resnet18(num_classes=10), cn=DSUOptions(),
                 placement=None, seed=1)
    assert len(styled(net)) == len(net.cn_controller) == 8  # one per BasicBlock
    with pytest.raises(ValueError, match="CrossNormOptions"):
        build_model("wrn16_2", 10, cn=DSUOptions(), crop="both", **TINY_NET)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_tiny_run_per_method_trains_and_records_the_method(make_cfg, tmp_path, name):
    cfg = make_cfg(f"style={name}", "style.p=1.0", "epochs=3", "evaluate_corruptions=false",
                   "optimizer.lr=0.05")
    results = run(cfg)
    assert results["method"] == name and results["style"] == name
    assert results["style_units"] > 0 and results["cn_units"] == 0
    rows = [json.loads(line) for line in
            (Path(results["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    cn_on = [r["train/cn_on"] for r in rows if "train/cn_on" in r]
    assert cn_on and min(cn_on) == 1.0  # the controller switched the units on every step
    assert results["train/final_epoch_loss"] < results["train/first_epoch_loss"]


def test_a_killed_style_run_resumes_exactly(make_cfg, kill_run, tmp_path):
    overrides = ["style=efdmix", "epochs=3", "evaluate_corruptions=false"]
    straight = run(make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "a")))
    cfg = make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "b"))
    kill_run(cfg, at=3)
    resumed = run(cfg)
    assert not straight["run_dir"] == resumed["run_dir"]
    for key in ("clean/error", "train/final_epoch_loss", "train/first_epoch_loss"):
        assert resumed[key] == straight[key], key


@pytest.mark.parametrize("overrides, message", [
    (["style=mixstyle", "style.mix=crossdomain"], "no domain labels"),
    (["style=efdmix", "style.mix=crossdomain"], "use style.mix=random"),
    (["style=dsu", "batch_size=1"], "batch_size >= 2"),
    (["style=dsu", "cn=on"], "use cn=off with it"),
    (["style=padain", "compile=true"], "use compile=false"),
    (["style=mixstyle", "style.p=1.5"], r"style.p must be in \[0, 1\]"),
])
def test_bad_style_input_is_refused_before_anything_is_written(make_cfg, tmp_path, overrides,
                                                                 message):
    from snc.engine.runner import validate
    from snc.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*overrides))
    assert not (tmp_path / "outputs").exists()


def test_other_tasks_refuse_a_style_method(make_cfg):
    from snc.engine.runner import validate
    from snc.errors import ConfigError

    with pytest.raises(ConfigError, match="use style=none"):
        validate(make_cfg("task=fixmatch", "backbone=wrn28_2_fm", "style=mixstyle",
                          "dataset.num_train=120", "task.labels=20", "batch_size=8"))


def cfg_group(name: str) -> str:
    """compare_<dataset>_<backbone> of a compare preset's name."""
    backbone = "resnext29_4x32d" if "resnext" in name else "wrn40_2"
    return name[:name.index(backbone) + len(backbone)]


COMPARE = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("compare_*.yaml"))


def test_compare_presets_cover_every_method_on_both_datasets_and_backbones():
    methods = ("basic", "sn", "cn", "sncn", *sorted(METHODS), "mixstyle_paper", "efdmix_paper",
               "dsu_paper")
    assert COMPARE == sorted(f"compare_{d}_{b}_{m}" for d in ("cifar10", "cifar100")
                             for b in ("resnext29_4x32d", "wrn40_2") for m in methods)


@pytest.mark.parametrize("name", [n for n in COMPARE if "cifar10_" in n])
def test_a_compare_preset_puts_its_method_where_cn_goes_in_one_shared_folder(name):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
        cn = compose("train", overrides=[f"experiment={cfg_group(name)}_cn"])
    group = cfg_group(name)
    method = name[len(group) + 1:]
    units = unit_options(cfg)
    assert units.label == method.replace("_paper", "")
    assert cfg.experiment_name == group  # one report for the group
    if method.endswith("_paper"):
        assert cfg.position.name == "stage_output"
        blocks = cfg.position.blocks
        assert (blocks == "all") if method == "dsu_paper" else (list(blocks) == [1, 2])
        model = build_model(cfg.backbone.name, 10, cn=units.style, placement=units.placement)
        assert len(styled(model)) == (3 if method == "dsu_paper" else 2)
    elif method in METHODS:
        assert units.style == METHODS[method]()  # the paper's defaults
        assert cfg.position == cn.position and cfg.optimizer == cn.optimizer
        assert cfg.batch_size == cn.batch_size and cfg.epochs == cn.epochs


def test_the_report_compares_the_methods_with_basic_and_cn():
    from snc.report.tables import markdown, methods_markdown, summarize

    errors = {"basic": [10.0, 11.0, 12.0], "cn": [9.0, 9.5, 10.0], "mixstyle": [8.0, 9.0, 13.0]}
    runs = [{"experiment": "compare_x", "task": "classify", "dataset": "cifar10",
             "backbone": "wrn40_2", "method": m, "style": m if m == "mixstyle" else "none",
             "position": "post_addition", "epochs": 200, "seed": seed, "clean/error": e,
             "mce": e + 10, "run_dir": f"/r/{m}{seed}"}
            for m, values in errors.items() for seed, e in enumerate(values, 1)]
    text = methods_markdown(summarize(runs))
    row = next(line for line in text.splitlines() if line.startswith("| mixstyle |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean = sum(errors["mixstyle"]) / 3
    std = (sum((x - mean) ** 2 for x in errors["mixstyle"]) / 2) ** 0.5
    assert cells[3].startswith(f"{mean:.2f} ± {std:.2f} (n=3)")
    assert cells[4].startswith(f"{mean + 10:.2f} ± {std:.2f} (n=3)")  # mCE
    for cell, base in ((cells[5], "basic"), (cells[6], "cn")):
        diff = mean - sum(errors[base]) / 3
        assert cell.startswith(f"{diff:+.2f} [")
        low, high = (float(x) for x in cell.split("[")[1].rstrip("]").split(","))
        assert low < diff < high
    assert "| cn |" in text and "Method comparison: compare_x" in text
    assert "Method comparison" in markdown([], summarize(runs), runs)
    no_style = [r for r in runs if r["method"] != "mixstyle"]
    assert methods_markdown(summarize(no_style)) == ""  # CN/SN groups keep their tables


def test_the_compare_page_commands_compose():
    import fnmatch
    import shlex

    page = (Path(CONFIG_DIR).parent / "docs" / "compare.md").read_text()
    page = page.replace("\\\n", " ")  # continued lines
    commands = [line.split("#")[0] for line in page.splitlines()
                if line.startswith("python train.py")]
    assert len(commands) == 3
    for command in commands:
        args = [a for a in shlex.split(command)[2:] if a != "-m"]
        pattern = next((a[len("experiment=glob("):-1] for a in args
                        if a.startswith("experiment=glob(")), None)
        if pattern:
            assert len(fnmatch.filter(COMPARE, pattern)) == 11
            args = [a for a in args if not a.startswith("experiment=")]
            args.append(f"experiment={fnmatch.filter(COMPARE, pattern)[0]}")
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=args)
        assert unit_options(cfg).label in ("basic", "mixstyle")
        assert cfg.dataset.name in ("cifar10", "cifar100", "npz")
