"""backbone=torchvision|timm through the real config/engine path, sweep=positions, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from snc.engine import run
from snc.errors import ConfigError
from snc.tasks.classify import Classify, build_network

TINY = ["dataset.num_train=64", "dataset.num_test=32", "batch_size=32", "eval_batch_size=64",
        "epochs=1", "evaluate_corruptions=false"]


@pytest.mark.parametrize("backbone", [
    ["backbone=torchvision", "backbone.arch=mobilenet_v3_small",
     "+backbone.kwargs.width_mult=0.25", "backbone.cifar_stem=true", "position=identity"],
    ["backbone=timm", "backbone.arch=resnet10t", "backbone.cifar_stem=true",
     "position.blocks=[1,3]"],
], ids=["torchvision_mobilenet_v3", "timm_resnet"])
def test_one_epoch_on_the_synthetic_set(make_cfg, backbone):
    if "backbone=timm" in backbone:
        pytest.importorskip("timm")
    cfg = make_cfg(*backbone, "sn=on", "cn=on", "cn.active_num=2", *TINY)
    results = run(cfg)
    stored = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert stored["backbone"] == cfg.backbone.name and stored["backbone"].endswith(
        cfg.backbone.arch)
    model = build_network(cfg, 10, pretrained=False)
    assert stored["sn_units"] == stored["cn_units"] == len(model.cn_controller) >= 2
    assert 0 <= stored["clean/error"] <= 100


def test_bad_input_fails_before_anything_is_written(make_cfg, tmp_path, monkeypatch):
    def fails(*overrides, match):
        cfg = make_cfg(*overrides)
        with pytest.raises(ConfigError, match=match):
            Classify(cfg)

    tv = ["backbone=torchvision", "backbone.arch=resnet18", "sn=on"]
    fails(*tv, "position=layer_input", match=r"valid positions: identity, pre_residual, "
                                             r"post_residual, post_addition, stage_output, image")
    fails(*tv, "position.blocks=[5]", match="outside the model's stages")
    fails(*tv, match=r"layer4.0.snc_post_addition sees a 1x1 map .*cifar_stem=true")
    fails("backbone=torchvision", "backbone.arch=resnet17", match="unknown torchvision")
    fails(*tv, "backbone.weights=IMAGENET9K", match="choose one of DEFAULT, IMAGENET1K_V1")
    # weights offline: the error names the file and the cache folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, **kw):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    fails(*tv, "backbone.weights=IMAGENET1K_V1",
          match=rf"place resnet18-f37072fd.pth in {folder}")
    # timm missing: the install command
    monkeypatch.setitem(sys.modules, "timm", None)
    fails("backbone=timm", match=r"pip install -e \.\[timm\]")
    assert not (tmp_path / "outputs").exists()


def test_weights_from_the_cache_load_before_the_units(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), folder / "resnet18-f37072fd.pth")
    cfg = make_cfg("backbone=torchvision", "backbone.arch=resnet18", "sn=on",
                   "backbone.weights=IMAGENET1K_V1")
    model = build_network(cfg, 10)
    assert torch.equal(model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert model.fc.out_features == 10 and hasattr(model.layer1[0], "snc_post_addition")


def test_sweep_positions_lists_what_the_model_offers():
    from snc.config import CONFIG_DIR

    def positions(*overrides):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["sweep=positions", *overrides],
                          return_hydra_config=True)
        return OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)["position"]

    assert positions("backbone=torchvision", "backbone.arch=resnet18") == \
        "identity,pre_residual,post_residual,post_addition,stage_output,image"
    assert positions("backbone=torchvision", "backbone.arch=vit_b_16") == \
        "post_addition,stage_output,image"
    assert positions("backbone=torchvision", "backbone.arch=vgg11") == \
        "after_conv,after_act,image"  # no norm layers: no after_norm job
    # RegNet's builder does tensor math that the meta device cannot: built on the CPU instead
    assert positions("backbone=torchvision", "backbone.arch=regnet_y_400mf").endswith(
        "post_addition,stage_output,image")
    assert positions("backbone=densenet40_12") == "layer_input,new_features,image"
