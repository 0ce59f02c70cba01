"""Backbones: parameter and unit counts against the official code (tests/data/official.json),
every position with SN/CN/CNSN running forward and backward, and the build-time errors."""

import json
import re
from pathlib import Path

import pytest
import torch

from snc.models import (
    build_model,
    count_parameters,
    count_units,
    get_backbone_spec,
    list_backbones,
)
from snc.ops import CrossNorm, SelfNorm

REF = json.loads((Path(__file__).parent / "data" / "official.json").read_text())
OFFICIAL_BACKBONE = {"wrn40_2": "wrn40_2", "resnext29": "resnext29_4x32d",
                     "allconv": "allconv", "densenet": "densenet40_12"}
OFFICIAL_POSITION = {"pre": "pre_residual", "residual": "post_residual", "identity": "identity",
                     "post": "post_addition", "1": "after_conv", "2": "after_norm",
                     "3": "after_act", "conv1_pre": "layer_input", "conv1_post": "new_features"}
CIFAR_BACKBONES = ["allconv", "densenet40_12", "densenet_bc_100_12", "resnext29_32x4d",
                   "resnext29_4x32d", "wrn28_2", "wrn40_2"]
# Narrow and shallow variants so a forward/backward costs milliseconds: one per registered
# backbone (test_every_backbone_has_a_tiny_variant keeps it so).
TINY = {
    "allconv": dict(width1=8, width2=16),
    "densenet40_12": dict(depth=7, growth_rate=4),
    "densenet_bc_100_12": dict(depth=10, growth_rate=4),
    "resnext29_4x32d": dict(depth=11, cardinality=2, base_width=8, stem_width=8),
    "resnext29_32x4d": dict(depth=11, cardinality=4, base_width=16, stem_width=8),
    "wrn28_2": dict(depth=10, widen_factor=1),
    "wrn40_2": dict(depth=10, widen_factor=1),
    "wrn16_2": dict(depth=10, widen_factor=1),
    "wrn28_2_fm": dict(depth=10, widen_factor=1),
    "resnet50": dict(width=8, layers=[1, 1, 1, 1]),
}
CROPS = ("neither", "style", "content", "both")
# Parameters that get no gradient by design: FixMatch's WRN evaluates bn1 of the first block of
# stages 2 and 3 for its running statistics only (a quirk of the reference, wave2.md §1.2).
NO_GRADIENT = {"wrn28_2_fm": r"block[23]\.0\.bn1\.(weight|bias)"}
# Input size per backbone: the ImageNet ResNet reduces 32x32 to 1x1 (no channel statistics).
SIZE = {"resnet50": 128}


def reference_cases():
    cases = []
    for dataset, num_classes in (("cifar10", 10), ("cifar100", 100)):
        for official, ours in OFFICIAL_BACKBONE.items():
            for unit_type, positions in REF["param_counts"][dataset][official].items():
                for pos, rec in positions.items():
                    if rec.get("supported", True) and "params" in rec:
                        cases.append((ours, num_classes, unit_type, pos, rec))
    return cases


def test_every_cifar_backbone_is_registered():
    assert set(CIFAR_BACKBONES) <= set(list_backbones())


def test_every_backbone_has_a_tiny_variant():
    assert sorted(TINY) == list_backbones()


@pytest.mark.parametrize("name, num_classes, unit_type, pos, rec", reference_cases(),
                         ids=lambda v: str(v) if not isinstance(v, dict) else "")
def test_parameter_and_unit_counts_equal_the_official_code(name, num_classes, unit_type, pos,
                                                           rec):
    kw = dict(sn="sn" in unit_type, cn="cn" in unit_type)
    if unit_type != "none":
        kw["position"] = OFFICIAL_POSITION[pos]
    model = build_model(name, num_classes, **kw)
    units = count_units(model)
    assert count_parameters(model) == rec["params"]
    assert (units["sn"], units["cn"]) == (rec["sn_units"], rec["cn_units"])
    if kw["sn"]:
        two = build_model(name, num_classes, gates=2, **kw)
        assert count_parameters(two) == rec["params_if_two_gates"]
    if kw["cn"]:
        assert len(model.cn_controller) == rec["cn_units"]


def test_extra_reference_counts():
    extra = REF["extra_reference_counts"]
    for classes, key in ((10, "cifar10"), (100, "cifar100")):
        assert count_parameters(build_model("densenet_bc_100_12", classes)) == \
            extra["densenet_bc_100_12_plain"][key]
        assert count_parameters(build_model("resnext29_32x4d", classes)) == \
            extra["resnext29_cardinality32_width4_plain"][key]
        assert count_parameters(build_model("wrn28_2", classes)) == \
            extra["wrn28_2_augmix_style_plain"][key]
    bc = build_model("densenet_bc_100_12", 10, sn=True, cn=True, position="new_features")
    rec = extra["densenet_bc_100_12_cnsn_conv2_post_cifar10"]
    assert count_parameters(bc) == rec["params"] and count_units(bc)["sn"] == rec["sn_units"]


def sn_channels(model):
    return [m.channels for m in model.modules() if isinstance(m, SelfNorm)]


def test_selfnorm_channels_per_unit_in_network_order():
    ref = REF["sn_channels_per_unit"]
    assert sn_channels(build_model("wrn40_2", sn=True, position="post_addition")) == \
        ref["wrn40_2"]["post/residual/identity"]
    assert sn_channels(build_model("wrn40_2", sn=True, position="pre_residual")) == \
        ref["wrn40_2"]["pre"]
    assert sn_channels(build_model("resnext29_4x32d", sn=True, position="identity")) == \
        ref["resnext29"]["pre/identity"]
    assert sn_channels(build_model("allconv", sn=True, position="after_act")) == ref["allconv"]
    dense = sn_channels(build_model("densenet40_12", sn=True, position="layer_input"))
    assert len(dense) == 36 and sum(dense) == 8424


def positions_cases():
    """Every registered backbone x position x unit kind, each with a fixed crop (cycling)."""
    cases = []
    for name in list_backbones():
        for i, position in enumerate(get_backbone_spec(name).positions):
            for units in ("sn", "cn", "cnsn"):
                cases.append((name, position, units, CROPS[i % len(CROPS)]))
    return cases


@pytest.mark.parametrize("name, position, units, crop", positions_cases())
def test_every_backbone_position_runs_forward_and_backward(name, position, units, crop):
    model = build_model(name, 10, sn="sn" in units, cn="cn" in units, position=position,
                        crop=crop, prob=1.0, **TINY[name])
    ctrl = model.cn_controller
    x = torch.randn(4, 3, SIZE.get(name, 32), SIZE.get(name, 32))
    model.train()
    if "cn" in units:
        ctrl.active_num = len(ctrl)  # every unit acts in this forward
    with ctrl.step():
        out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert all(re.fullmatch(NO_GRADIENT.get(name, "$^"), n) for n in no_grad), no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if "sn" in units:
        sn = next(m for m in model.modules() if isinstance(m, SelfNorm))
        assert sn.g_fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval is deterministic: CN never acts


@pytest.mark.parametrize("name", list_backbones())
def test_cn_changes_the_output_only_while_active(name):
    torch.manual_seed(0)
    model = build_model(name, 10, cn=True, prob=1.0, **TINY[name]).train()
    for m in model.modules():  # freeze BN statistics and dropout out of the comparison
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)):
            m.eval()
    size = SIZE.get(name, 32)
    x = torch.randn(4, 3, size, size) * torch.rand(4, 1, 1, 1) * 3
    with torch.no_grad():
        plain = model(x)
        model.cn_controller.active_num = len(model.cn_controller)
        with model.cn_controller.step():
            mixed = model(x)
        again = model(x)
    assert not torch.allclose(plain, mixed)
    assert torch.equal(plain, again)


def test_blocks_restrict_units_to_chosen_stages():
    full = count_units(build_model("wrn40_2", sn=True, cn=True))
    stage2 = build_model("wrn40_2", sn=True, cn=True, blocks=[2])
    assert count_units(stage2)["sn"] == full["sn"] // 3 == 6
    assert sn_channels(stage2) == [64] * 6
    assert count_units(build_model("wrn40_2", cn=True, blocks=[1, 3]))["cn"] == 12


def test_image_position_and_separate_sn_cn_positions():
    image = build_model("wrn40_2", cn=True, position="image")
    assert count_units(image)["cn"] == 1 and image.input_unit is not None
    sn_image = build_model("wrn40_2", sn=True, position="image")
    assert sn_channels(sn_image) == [3]
    # ImageNet's published "CN": CN on the image, SN inside the network
    mixed = build_model("wrn40_2", sn=True, cn=True, cn_position="image",
                        sn_position="post_addition")
    assert count_units(mixed) == {"sn": 18, "cn": 1, "se": 0}
    assert isinstance(mixed.input_unit.cn, CrossNorm) and mixed.input_unit.sn is None


def test_se_units_at_any_position():
    model = build_model("wrn40_2", se=True, position="post_residual", **TINY["wrn40_2"])
    assert count_units(model) == {"sn": 0, "cn": 0, "se": 3}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_order_option_reaches_the_units():
    model = build_model("wrn40_2", sn=True, cn=True, order="sn_cn", **TINY["wrn40_2"])
    assert all(m.order == "sn_cn" for m in model.modules() if hasattr(m, "order"))


def test_densenet_batch_of_one_keeps_two_dimensional_logits():
    model = build_model("densenet40_12", **TINY["densenet40_12"]).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("kw, match", [
    (dict(name="wrn40_2", sn=True, position="after_conv"),
     r"unknown position 'after_conv' for backbone wrn40_2; valid positions: identity, "
     r"pre_residual, post_residual, post_addition, stage_output, image"),
    (dict(name="allconv", cn=True, cn_position="post_addition"), "valid positions: after_conv"),
    (dict(name="densenet40_12", sn=True, position="bottleneck"), "layer_input, new_features"),
    (dict(name="wrn40_2", cn=True, active_num=19), "active_num=19 but the model has 18"),
    (dict(name="wrn40_2", cn=True, position="image", active_num=2), "has 1 CrossNorm units"),
    (dict(name="wrn40_2", cn=True, prob=-0.1), r"cn.prob must be in \[0, 1\]"),
    (dict(name="wrn40_2", cn=True, crop="booth"),
     "unknown CrossNorm crop 'booth'; choose one of neither"),
    (dict(name="wrn40_2", cn=True, mode="one"), "unknown CrossNorm mode"),
    (dict(name="wrn40_2", sn=True, blocks=[4]), "stage numbers from 1 to 3"),
    (dict(name="wrn40_2", sn=True, se=True), "not both"),
    (dict(name="wrn40_2", sn=True, gates=3), "gates must be 1"),
    (dict(name="resnet18"), "unknown backbone 'resnet18'; choose one of allconv"),
])
def test_build_errors_name_the_fix(kw, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kw)
