"""attach(): SN/CN units in torchvision and timm networks, by block family (issue 21)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, densenet, efficientnet, resnet, swin_transformer, vgg

from snc.models import attach, build_model, count_units, supported_positions
from snc.models.attach import find_blocks
from snc.ops import CrossNorm, find_cross_norm_units

try:
    import timm
except ImportError:  # pragma: no cover - the dev extra installs it
    timm = None


def _tiny_efficientnet_v2() -> nn.Module:
    setting = [efficientnet.FusedMBConvConfig(1, 3, 1, 8, 8, 1),
               efficientnet.FusedMBConvConfig(2, 3, 2, 8, 16, 1),
               efficientnet.MBConvConfig(2, 3, 1, 16, 16, 2)]
    return efficientnet.EfficientNet(setting, dropout=0.0, last_channel=32, num_classes=10)


def _tiny_vgg() -> nn.Module:
    with torch.device("meta"):  # VGG's own classifier (25088 x 4096) is never allocated
        model = vgg.VGG(vgg.make_layers([8, "M", 16, "M"], batch_norm=True), num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Linear(16, 10)
    model.to_empty(device="cpu")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


# family -> (tiny model builder, input size, blocks found)
FAMILIES = {
    "torchvision_resnet_basic": (lambda: resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1],
                                                      num_classes=10), 64, 4),
    "torchvision_resnext": (lambda: resnet.ResNet(resnet.Bottleneck, [2, 1, 1, 1], groups=2,
                                                  width_per_group=8, num_classes=10), 64, 5),
    "torchvision_densenet": (lambda: densenet.DenseNet(8, (2, 2), 16, bn_size=2,
                                                       num_classes=10), 64, 4),
    "torchvision_mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(
        width_mult=0.25, num_classes=10), 64, 17),
    "torchvision_mobilenet_v3": (lambda: torchvision.models.mobilenet_v3_small(
        width_mult=0.25, num_classes=10), 64, 11),
    "torchvision_efficientnet_v2": (_tiny_efficientnet_v2, 32, 4),
    "torchvision_regnet": (lambda: torchvision.models.regnet_y_400mf(num_classes=10), 64, 16),
    "torchvision_convnext": (lambda: convnext.ConvNeXt(
        [convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 2)],
        num_classes=10), 32, 3),
    "torchvision_vgg": (_tiny_vgg, 32, 6),
    "torchvision_vit": (lambda: torchvision.models.VisionTransformer(
        32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10), 32, 2),
    "torchvision_swin": (lambda: swin_transformer.SwinTransformer(
        [4, 4], 8, [1, 1], [1, 2], [2, 2], num_classes=10), 32, 2),
}
if timm is not None:
    FAMILIES.update({
        "timm_resnet": (lambda: timm.create_model("resnet18", num_classes=10), 64, 8),
        "timm_convnext": (lambda: timm.create_model(
            "convnext_atto", num_classes=10, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)), 64, 4),
        "timm_efficientnet": (lambda: timm.create_model(
            "mobilenetv3_small_050", num_classes=10), 64, 11),
        "timm_vit": (lambda: timm.create_model(
            "vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2,
            embed_dim=16, num_heads=2), 32, 2),
        "timm_swin": (lambda: timm.create_model(
            "swin_tiny_patch4_window7_224", num_classes=10, img_size=32, window_size=2,
            embed_dim=8, depths=(1, 1), num_heads=(1, 2)), 32, 2),
    })

CASES = []
for _family, (_make, _size, _) in FAMILIES.items():
    for _position in supported_positions(_make()):
        CASES.append(pytest.param(_family, _position, id=f"{_family}-{_position}"))


def _batch(size: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family,position", CASES)
def test_every_family_and_position_trains_and_equals_the_network_without_units(family,
                                                                               position):
    make, size, _ = FAMILIES[family]
    torch.manual_seed(0)
    original = make().eval()
    x = _batch(size)
    # CN switched off is the identity: the adapter's forward must equal the library's exactly
    plain = attach(copy.deepcopy(original), cn=True, position=position).eval()
    with torch.no_grad():
        assert torch.equal(plain(x), original(x))
    model = attach(copy.deepcopy(original), sn=True, cn=True, position=position)
    counts = count_units(model)
    assert counts["sn"] == counts["cn"] == len(model.cn_controller) >= 1
    assert "snc_" in str(model)  # the units print with their blocks
    model.train()
    with model.cn_controller.activate(range(len(model.cn_controller))):
        out = model(x)
    out.float().square().mean().backward()
    assert torch.isfinite(out).all() and out.shape == (4, 10)
    units = [m for m in model.modules() if m.__class__.__name__ == "SelfNorm"]
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for u in units for p in u.parameters())
    # new keys only: the original layers keep theirs
    keys, new_keys = set(original.state_dict()), set(model.state_dict())
    assert keys <= new_keys and all(".snc_" in k or k.startswith("snc_") for k in new_keys - keys)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_blocks_are_found_and_numbered_by_the_models_stages(family):
    make, _, expected = FAMILIES[family]
    blocks = find_blocks(make())
    assert len(blocks) == expected
    stages = [b.stage for b in blocks]
    assert stages[0] == 1 and stages == sorted(stages)


def test_unit_counts_follow_the_blocks_and_stages():
    def tv18():
        return torchvision.models.resnet18(num_classes=10)

    assert count_units(attach(tv18(), sn=True, cn=True)) == {"sn": 8, "cn": 8, "se": 0}
    assert count_units(attach(tv18(), sn=True, position="post_residual", blocks=[1, 3]))["sn"] \
        == 4
    assert count_units(attach(tv18(), cn=True, position="image"))["cn"] == 1
    both = attach(tv18(), sn=True, cn=True, sn_position="post_addition", cn_position="image")
    assert count_units(both) == {"sn": 8, "cn": 1, "se": 0}
    assert count_units(attach(tv18(), se=True))["se"] == 8
    # MobileNetV2: identity only where the block has a shortcut
    v2 = torchvision.models.mobilenet_v2(width_mult=0.25)
    shortcuts = sum(m.use_res_connect for m in v2.modules()
                    if type(m).__name__ == "InvertedResidual")
    assert count_units(attach(v2, cn=True, position="identity"))["cn"] == shortcuts == 11
    # stages of a flat MobileNet: runs of blocks at one resolution
    assert [b.stage for b in find_blocks(torchvision.models.mobilenet_v2())][:4] == [1, 2, 2, 3]


def _to_own_keys(state: dict) -> dict:
    """attach's unit names -> snc's own resnet50 names (``snc_<position>`` -> ``<position>``,
    ``snc_image`` -> ``input_unit``)."""
    out = {}
    for k, v in state.items():
        k = k.replace("snc_image.", "input_unit.", 1) if k.startswith("snc_image.") else k
        out[k.replace(".snc_", ".")] = v
    return out


@pytest.mark.parametrize("position", ["identity", "pre_residual", "post_residual",
                                      "post_addition", "image"])
def test_torchvision_resnet50_with_units_equals_the_own_resnet50(position, capsys):
    torch.manual_seed(0)
    tv = attach(torchvision.models.resnet50(num_classes=10), sn=True, cn=True,
                position=position, seed=3)
    own = build_model("resnet50", 10, sn=True, cn=True, position=position, seed=3)
    own.load_state_dict(_to_own_keys(tv.state_dict()), strict=True)
    assert count_units(tv) == count_units(own)
    names_tv = [n for n, m in tv.named_modules() if isinstance(m, CrossNorm)]
    names_own = [n for n, m in own.named_modules() if isinstance(m, CrossNorm)]
    assert [_to_own_keys({n: 0}).popitem()[0] for n in names_tv] == names_own  # same order
    x = _batch(64, n=4)
    outs, grads = [], []
    for model in (tv, own):
        model.train()
        chosen = list(range(0, len(model.cn_controller), 3))
        with model.cn_controller.activate(chosen):
            out = model(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({k: p.grad for k, p in _to_own_keys(dict(model.named_parameters())).items()})
    out_diff = (outs[0] - outs[1]).abs().max().item()
    grad_diff = max((grads[0][k] - grads[1][k]).abs().max().item() for k in grads[1])
    with capsys.disabled():
        print(f"\n  resnet50 {position}: max |out diff| {out_diff:.2e}, "
              f"max |grad diff| {grad_diff:.2e}")
    assert out_diff == 0.0 and grad_diff == 0.0


def test_pretrained_weights_load_before_or_after_attaching():
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=10).eval()
    x = _batch(64)
    # before: strict into the bare network, then attach (CN off = identity)
    before = torchvision.models.resnet18(num_classes=10)
    before.load_state_dict(source.state_dict(), strict=True)
    before = attach(before, cn=True).eval()
    # after: into the attached network; only the units are missing
    after = attach(torchvision.models.resnet18(num_classes=10), sn=True, cn=True)
    result = after.load_state_dict(source.state_dict(), strict=False)
    assert not result.unexpected_keys and result.missing_keys
    assert all(".snc_post_addition." in k for k in result.missing_keys)
    with torch.no_grad():
        assert torch.equal(before(x), source(x))
    # round trip of an attached network, units included
    again = attach(torchvision.models.resnet18(num_classes=10), sn=True, cn=True)
    again.load_state_dict(after.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), after.eval()(x))


def test_the_controller_switches_active_num_units_with_probability_prob():
    model = attach(torchvision.models.resnet18(num_classes=10), cn=True, active_num=3,
                   prob=0.25, seed=5)
    active = []
    for unit in find_cross_norm_units(model):
        unit.register_forward_hook(lambda m, a, o: active.append(m.active))
    ctrl, x, fired = model.cn_controller, _batch(64, n=2), []
    model.train()
    for _ in range(40):
        active.clear()
        with ctrl.step() as on:
            model(x)
        fired.append(on)
        assert sum(active) == (3 if on else 0) and len(active) == 8
    assert 0.1 < sum(fired) / len(fired) < 0.45
    # DDP: every rank's controller (one seed) draws the same steps and units
    twins = [attach(torchvision.models.resnet18(), cn=True, active_num=2, prob=0.5, seed=9)
             for _ in range(2)]
    draws = [[(c.draw(), c.choose()) for _ in range(10)] for c in
             (t.cn_controller for t in twins)]
    assert draws[0] == draws[1]
    with pytest.raises(ValueError, match="cn.active_num=9 but the model has 8"):
        attach(torchvision.models.resnet18(), cn=True, active_num=9)


def test_copies_compile_and_ddp_see_their_own_units(tmp_path):
    torch.manual_seed(0)
    model = attach(resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=10), sn=True,
                   cn=True, position="pre_residual").eval()
    x = _batch(32)
    twin = copy.deepcopy(model)
    assert twin.layer1[0].forward.__self__ is twin.layer1[0]
    with torch.no_grad():
        twin.layer1[0].snc_pre_residual.sn.g_fc.weight.mul_(3)
        assert not torch.equal(twin(x), model(x))
        compiled = torch.compile(model, backend="eager")
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model.train())
        with model.cn_controller.activate([0]):
            ddp(x).sum().backward()
        assert model.layer1[0].snc_pre_residual.sn.g_fc.weight.grad is not None
    finally:
        dist.destroy_process_group()


def test_sites_glob_puts_a_unit_after_any_module():
    model = attach(torchvision.models.resnet18(num_classes=10), sn=True, cn=True,
                   sites=["layer*.0.conv2", "layer4"])
    x = _batch(64)
    assert count_units(model)["sn"] == 4  # layer4.0.conv2: inside layer4
    assert "snc_after" in dict(model.layer4.named_children())  # appended to the Sequential
    with model.cn_controller.activate([0, 3]):
        model(x).sum().backward()
    # a model with no known block: the message lists the types and shows sites=
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"no block of a known family.*Conv2d, ReLU.*sites="):
        attach(net, sn=True)
    assert count_units(attach(net, sn=True, sites="1"))["sn"] == 1


def test_bad_input_fails_with_the_fix():
    with pytest.raises(ValueError, match=r"valid positions: post_addition, stage_output, image"):
        attach(torchvision.models.vit_b_16(), sn=True, position="pre_residual")
    with pytest.raises(ValueError, match=r"outside the model's stages: .* from 1 to 4 "
                                         r"\(1: layer1.0..layer1.1"):
        attach(torchvision.models.resnet18(), sn=True, blocks=[2, 5])
    with pytest.raises(TypeError, match="unknown options depth"):
        attach(torchvision.models.resnet18(), sn=True, depth=3)
    with pytest.raises(ValueError, match="already has a unit"):
        attach(attach(torchvision.models.resnet18(), sn=True), sn=True)
