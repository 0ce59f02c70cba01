"""SelfNorm / CrossNorm math against the paper and the official semantics
(tests/data/official.json: ``semantics``, ``constants``)."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from snc.ops import (
    CNSN,
    CrossNorm,
    CrossNormController,
    SelfNorm,
    SqueezeExcitation,
    channel_stats,
    crop,
    cross_norm,
    sample_box,
    sample_cross_norm_args,
)

REF = json.loads((Path(__file__).parent / "data" / "official.json").read_text())


def styled_batch(n=6, c=5, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, c, 1, 1, generator=g) * 3
    std = torch.rand(n, c, 1, 1, generator=g) * 2 + 0.5
    return torch.randn(n, c, h, w, generator=g) * std + mean


def standardize(x, box=None, eps=1e-5):
    region = crop(x, box)
    m, s = channel_stats(region, eps)
    return (region - m) / s


# ---------------------------------------------------------------- statistics


def test_channel_stats_unbiased_with_eps_and_float32():
    assert REF["constants"]["crossnorm_stat_eps"] == 1e-5
    assert REF["constants"]["selfnorm_stat_eps"] == 1e-12
    x = styled_batch()
    mean, std = channel_stats(x, 1e-5)
    flat = x.flatten(2)
    assert torch.allclose(mean.flatten(2).squeeze(-1), flat.mean(-1), atol=1e-6)
    expected = (flat.var(-1, unbiased=True) + 1e-5).sqrt()
    assert torch.allclose(std.flatten(2).squeeze(-1), expected, atol=1e-6)
    m16, s16 = channel_stats(x.to(torch.bfloat16), 1e-5)
    assert m16.dtype == torch.float32 and s16.dtype == torch.float32


def test_channel_stats_over_box_and_on_sequences():
    x = styled_batch()
    box = ((2, 7), (1, 9))
    mean, _ = channel_stats(x, 1e-5, box)
    assert torch.allclose(mean.flatten(), x[:, :, 2:7, 1:9].mean((2, 3)).flatten(), atol=1e-6)
    seq = torch.randn(3, 4, 20)
    m, s = channel_stats(seq, 1e-5, ((5, 15),))
    assert m.shape == (3, 4, 1)
    assert torch.allclose(m.flatten(), seq[..., 5:15].mean(-1).flatten(), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 spatial positions"):
        channel_stats(torch.randn(2, 3, 1, 1), 1e-5)


# ---------------------------------------------------------------- CrossNorm


def test_two_instance_carries_partner_statistics_and_keeps_content():
    x = styled_batch()
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    out = cross_norm(x, perm=perm)
    m_out, s_out = channel_stats(out, 1e-5)
    m_x, s_x = channel_stats(x, 1e-5)
    assert torch.allclose(m_out, m_x[perm], atol=1e-4)
    assert torch.allclose(s_out, s_x[perm], atol=1e-4)
    assert torch.allclose(standardize(out), standardize(x), atol=1e-4)


def test_one_instance_swaps_statistics_between_channels_of_one_sample():
    x = styled_batch()
    cperm = torch.tensor([2, 0, 4, 1, 3])
    out = cross_norm(x, channel_perm=cperm)
    m_out, s_out = channel_stats(out, 1e-5)
    m_x, s_x = channel_stats(x, 1e-5)
    assert torch.allclose(m_out, m_x[:, cperm], atol=1e-4)
    assert torch.allclose(s_out, s_x[:, cperm], atol=1e-4)
    # each instance keeps its own set of statistics, only reassigned among its channels
    assert torch.allclose(m_out.flatten(1).sort(1).values, m_x.flatten(1).sort(1).values,
                          atol=1e-4)


def test_style_crop_takes_partner_statistics_from_the_box():
    x = styled_batch()
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    box = ((3, 9), (2, 8))
    out = cross_norm(x, perm=perm, style_box=box)
    m_box, s_box = channel_stats(x, 1e-5, box)
    m_out, s_out = channel_stats(out, 1e-5)
    assert torch.allclose(m_out, m_box[perm], atol=1e-4)
    assert torch.allclose(s_out, s_box[perm], atol=1e-4)
    assert torch.allclose(standardize(out), standardize(x), atol=1e-4)


@pytest.mark.parametrize("with_style_box", [False, True])
def test_content_and_both_crops_restyle_only_the_content_box(with_style_box):
    x = styled_batch()
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    content_box = ((1, 7), (4, 10))
    style_box = ((0, 6), (0, 6)) if with_style_box else None
    out = cross_norm(x, perm=perm, content_box=content_box, style_box=style_box)
    mask = torch.zeros(12, 10, dtype=torch.bool)
    mask[1:7, 4:10] = True
    assert torch.equal(out[..., ~mask], x[..., ~mask])  # outside B2: bit-identical
    m_src, s_src = channel_stats(x, 1e-5, style_box)
    m_in, s_in = channel_stats(out, 1e-5, content_box)
    assert torch.allclose(m_in, m_src[perm], atol=1e-4)
    assert torch.allclose(s_in, s_src[perm], atol=1e-4)
    assert torch.allclose(standardize(out, content_box), standardize(x, content_box), atol=1e-4)


def test_cross_norm_keeps_dtype_and_lets_gradients_reach_content_and_style():
    x = styled_batch().requires_grad_(True)
    out = cross_norm(x, perm=torch.tensor([1, 0, 3, 2, 5, 4]), content_box=((0, 6), (0, 6)))
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[..., 8:, 8:].abs().sum() > 0  # outside the box: identity path
    y = cross_norm(styled_batch().to(torch.bfloat16), perm=torch.tensor([1, 0, 3, 2, 5, 4]))
    assert y.dtype == torch.bfloat16


def test_box_sampler_follows_the_official_distribution():
    g = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(3000):
        box = sample_box((8, 8), g, beta=1.0, threshold=0.1)
        (y0, y1), (x0, x1) = box
        assert 0 <= y0 < y1 <= 8 and 0 <= x0 < x1 <= 8
        areas.append((y1 - y0) * (x1 - x0) / 64)
    areas = torch.tensor(areas)
    assert areas.min() > REF["constants"]["bbox_threshold"]
    assert areas.max() < 1.0  # the official sampler never returns the whole map
    # official.md: accepted mean area ~0.31 on 8x8 maps (max 0.56) with beta=1
    assert abs(areas.mean().item() - 0.31) < 0.02
    assert areas.max().item() <= 0.5625 + 1e-9
    big = torch.tensor([math.prod(b - a for a, b in sample_box((224, 224), g)) / 224**2
                        for _ in range(2000)])
    assert abs(big.mean().item() - 0.36) < 0.02
    # beta != 1 draws from NumPy's Beta, seeded from the torch generator: still reproducible
    a = sample_box((16, 16), torch.Generator().manual_seed(3), beta=0.5)
    b = sample_box((16, 16), torch.Generator().manual_seed(3), beta=0.5)
    assert a == b


def test_box_sampler_rejects_maps_too_small_for_the_threshold():
    with pytest.raises(ValueError, match="crop=neither"):
        sample_box((2, 2), torch.Generator().manual_seed(0))


def test_sampled_arguments_and_no_self_pairing():
    g = torch.Generator().manual_seed(1)
    fixed_points = 0
    for _ in range(50):
        args = sample_cross_norm_args((5, 3, 8, 8), crop="both", generator=g,
                                      self_pairing=False)
        assert not (args["perm"] == torch.arange(5)).any()
        assert args["style_box"] is not None and args["content_box"] is not None
        args = sample_cross_norm_args((5, 3, 8, 8), generator=g)
        fixed_points += int((args["perm"] == torch.arange(5)).sum())
    assert fixed_points > 0  # the official default may pair a sample with itself
    one = sample_cross_norm_args((5, 3, 8, 8), mode="one_instance", generator=g)
    assert one["perm"] is None and sorted(one["channel_perm"].tolist()) == [0, 1, 2]


def test_crossnorm_unit_acts_only_when_active_in_training():
    x = styled_batch()
    unit = CrossNorm(crop="style")
    unit.generator = torch.Generator().manual_seed(0)
    unit.train()
    assert unit(x) is x  # not switched on
    unit.active = True
    assert not torch.allclose(unit(x), x)
    unit.eval()
    assert unit(x) is x  # eval mode: always the identity
    unit.train()
    single = x[:1]
    assert unit(single) is single  # batch of one: no partner, documented no-op


@pytest.mark.parametrize("bad, match", [
    (dict(crop="styles"), "unknown CrossNorm crop 'styles'"),
    (dict(mode="three_instance"), "unknown CrossNorm mode"),
    (dict(threshold=1.5), r"threshold t must be in \[0, 1\)"),
    (dict(beta=0.0), "beta must be > 0"),
])
def test_crossnorm_rejects_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        CrossNorm(**bad)


# ---------------------------------------------------------------- SelfNorm


def test_selfnorm_parameter_counts_and_official_formula():
    assert sum(p.numel() for p in SelfNorm(32).parameters()) == 4 * 32
    assert sum(p.numel() for p in SelfNorm(32, gates=2).parameters()) == 8 * 32
    sn = SelfNorm(5).train()
    x = styled_batch()
    out = sn(x)
    mean, std = channel_stats(x, 1e-12)
    w = sn.g_fc.weight.reshape(5, 2)
    a = w[:, 0] * mean.flatten(1) + w[:, 1] * std.flatten(1)  # (N, C)
    a = (a - a.mean(0)) / (a.var(0, unbiased=False) + 1e-5).sqrt()  # BN1d, batch statistics
    g = torch.sigmoid(a).reshape(6, 5, 1, 1)
    assert torch.allclose(out, x * g, atol=1e-5)


def test_selfnorm_two_gates_with_f_tied_to_g_equals_one_gate():
    one, two = SelfNorm(5), SelfNorm(5, gates=2)
    two.g_fc.load_state_dict(one.g_fc.state_dict())
    two.f_fc.load_state_dict(one.g_fc.state_dict())
    x = styled_batch()
    assert torch.allclose(one(x), two(x), atol=1e-6)
    one.eval(), two.eval()
    assert torch.allclose(one(x), two(x), atol=1e-6)


def test_selfnorm_two_gates_recalibrate_mean_and_std_separately():
    sn = SelfNorm(5, gates=2).eval()
    nn.init.constant_(sn.f_bn.bias, 3.0)  # f -> sigmoid(3 + ...), g unchanged
    x = styled_batch()
    out = sn(x)
    m_x, s_x = channel_stats(x, 1e-12)
    m_o, s_o = channel_stats(out, 1e-12)
    stats = torch.stack((m_x.flatten(1), s_x.flatten(1)), -1)
    g = torch.sigmoid(sn.g_bn(sn.g_fc(stats))).reshape(m_x.shape)
    f = torch.sigmoid(sn.f_bn(sn.f_fc(stats))).reshape(m_x.shape)
    assert torch.allclose(s_o, g * s_x, atol=1e-4)
    assert torch.allclose(m_o, f * m_x, atol=1e-4)


def test_selfnorm_under_autocast_channels_last_and_gradients():
    sn = SelfNorm(5)
    x = styled_batch().to(memory_format=torch.channels_last).requires_grad_(True)
    out = sn(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().mean().backward()
    assert sn.g_fc.weight.grad is not None and sn.g_fc.weight.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sn(styled_batch().to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


@pytest.mark.parametrize("shape", [(6, 5, 12, 10), (4, 3, 7)])
def test_fused_selfnorm_equals_autograd_through_the_plain_ops(shape):
    import copy

    sn = SelfNorm(shape[1]).train()
    plain = copy.deepcopy(sn)
    x = (torch.randn(shape) * 2 + 1).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    weights = torch.randn(shape)
    (sn(x) * weights).sum().backward(retain_graph=True)
    n, c = shape[:2]
    mean, std = channel_stats(x_ref, 1e-12)  # the unfused reference: autograd everywhere
    gate = plain._g(mean.reshape(n, c, 1), std.reshape(n, c, 1)).reshape(mean.shape)
    (x_ref * gate * weights).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    for fused_p, plain_p in zip(sn.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(fused_p.grad, plain_p.grad, atol=1e-6)
    assert torch.equal(sn.g_bn.running_var, plain.g_bn.running_var)


def test_selfnorm_batch_of_one_in_training_is_a_clear_error():
    sn = SelfNorm(5).train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        sn(styled_batch()[:1])
    assert sn.eval()(styled_batch()[:1]).shape == (1, 5, 12, 10)


def test_se_block_shapes_and_gradients():
    se = SqueezeExcitation(32)
    x = torch.randn(4, 32, 6, 6, requires_grad=True)
    y = se(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert se.fc1.weight.grad.abs().sum() > 0
    assert SqueezeExcitation(32)(torch.randn(4, 32, 7)).shape == (4, 32, 7)  # 1-D input


# ---------------------------------------------------------------- unit + controller


def make_units(n=4, crop_mode="neither"):
    return [CNSN(cn=CrossNorm(crop=crop_mode)) for _ in range(n)]


def count_firing(units, x):
    fired = 0
    for u in units:
        if not torch.equal(u(x), x):
            fired += 1
    return fired


def test_controller_prob_zero_never_fires_prob_one_fires_active_num_then_resets():
    x = styled_batch()
    units = make_units()
    for u in units:
        u.train()
    never = CrossNormController([u.cn for u in units], active_num=2, prob=0.0, seed=0)
    for _ in range(20):
        with never.step() as on:
            assert not on and count_firing(units, x) == 0
    always = CrossNormController([u.cn for u in units], active_num=2, prob=1.0, seed=0)
    chosen = set()
    for _ in range(20):
        with always.step() as on:
            assert on
            assert count_firing(units, x) == 2
            assert sum(u.cn.active for u in units) == 2
            chosen.update(always.last_active)
        assert sum(u.cn.active for u in units) == 0  # reset after the forward
    assert chosen == {0, 1, 2, 3}


def test_controller_probability_and_reproducibility():
    units = make_units()
    ctrl = CrossNormController([u.cn for u in units], active_num=1, prob=0.25, seed=7)
    draws = [ctrl.draw() for _ in range(4000)]
    assert abs(sum(draws) / 4000 - 0.25) < 0.03
    a = CrossNormController([u.cn for u in units], active_num=2, prob=0.5, seed=3)
    state = a.state_dict()
    first = [a.choose() for _ in range(5)]
    a.load_state_dict(state)
    assert [a.choose() for _ in range(5)] == first


def test_controller_clears_flags_even_when_the_forward_fails():
    units = make_units()
    ctrl = CrossNormController([u.cn for u in units], active_num=3, prob=1.0)
    with pytest.raises(RuntimeError):
        with ctrl.step():
            raise RuntimeError("forward failed")
    assert not any(u.cn.active for u in units)


def test_controller_flags_reach_dataparallel_style_replicas():
    # nn.DataParallel replicas copy the module __dict__ when made, inside the forward: a flag
    # set before the forward is seen by every replica, and the master is cleared afterwards.
    import copy

    units = make_units(3)
    ctrl = CrossNormController([u.cn for u in units], active_num=1, prob=1.0)
    for _ in range(3):
        with ctrl.step():
            replicas = [copy.copy(u.cn) for u in units]
            assert sum(r.active for r in replicas) == 1
        assert sum(u.cn.active for u in units) == 0


@pytest.mark.parametrize("kw, match", [
    (dict(active_num=5), r"cn.active_num=5 but the model has 4 CrossNorm units"),
    (dict(active_num=0), r"1 <= cn.active_num <= 4"),
    (dict(prob=1.5), r"cn.prob must be in \[0, 1\]"),
])
def test_controller_rejects_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        CrossNormController([u.cn for u in make_units()], **kw)


def test_cnsn_order():
    sn = SelfNorm(5).eval()
    cn = CrossNorm()
    cn.active = True
    x = styled_batch()
    g = torch.Generator()
    cn.generator = g
    cn.train()
    g.manual_seed(0)
    a = CNSN(cn=cn, sn=sn, order="cn_sn")(x)
    g.manual_seed(0)
    b = sn(cn(x))
    assert torch.allclose(a, b)
    g.manual_seed(0)
    c = CNSN(cn=cn, sn=sn, order="sn_cn")(x)
    g.manual_seed(0)
    assert torch.allclose(c, cn(sn(x)))
    with pytest.raises(ValueError, match="choose one of cn_sn, sn_cn"):
        CNSN(cn=cn, order="sideways")


def test_selfnorm_input_gradient_with_frozen_parameters():
    """Feature inversion freezes the model and differentiates the image only."""
    torch.manual_seed(0)
    sn = SelfNorm(5).eval()
    reference = SelfNorm(5).eval()
    reference.load_state_dict(sn.state_dict())
    for p in sn.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, 5, 6, 6, requires_grad=True)
    (sn(x) ** 2).sum().backward()
    y = x.detach().clone().requires_grad_()
    (reference(y) ** 2).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)
    assert all(p.grad is None for p in sn.parameters())
