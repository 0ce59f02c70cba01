"""The capturable training step (issue 26): SelfNorm as plain ops, CrossNorm drawn on the
device and applied as masks, the step compiled as one graph.

The zero-graph-break tests compile with ``fullgraph=True`` and the ``aot_eager`` backend (the
forward and the backward graph are traced, no C++ code is generated), on a tiny network
with two CNSN sites so that tracing stays fast on one core.
"""

import copy
import math

import pytest
import torch
from torch import nn

from snc.ops import CNSN, CrossNorm, CrossNormController, SelfNorm, cross_norm, sample_box
from snc.ops.crossnorm import box_masks, cross_norm_masked, permutation_from_keys
from snc.tasks import objectives


def styled_batch(n=6, c=5, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, c, 1, 1, generator=g) * 3
    std = torch.rand(n, c, 1, 1, generator=g) * 2 + 0.5
    return torch.randn(n, c, h, w, generator=g) * std + mean


def box_mask(shape, box):
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[tuple(slice(a, b) for a, b in box)] = True
    return mask


# ---------------------------------------------------------------- SelfNorm: two paths, one result


@pytest.mark.parametrize("shape", [(6, 5, 12, 10), (4, 3, 7)])
def test_selfnorm_plain_ops_path_equals_the_fused_cpu_path(shape, monkeypatch):
    import snc.ops.selfnorm as selfnorm

    def close(a, b, tol=1e-4):  # relative to the largest entry: float32 sums in two orders
        return (a - b).abs().max() <= tol * a.abs().max()

    torch.manual_seed(0)
    fused = SelfNorm(shape[1]).train()
    plain = copy.deepcopy(fused)
    x = (torch.randn(shape) * 2 + 1).requires_grad_(True)
    x_plain = x.detach().clone().requires_grad_(True)
    weights = torch.randn(shape)
    out = fused(x)
    (out * weights).sum().backward()
    monkeypatch.setattr(selfnorm, "use_plain_ops", lambda t: True)
    out_plain = plain(x_plain)
    (out_plain * weights).sum().backward()
    assert torch.allclose(out, out_plain, atol=1e-6)
    assert close(x.grad, x_plain.grad)
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        assert close(a.grad, b.grad, 1e-3)
    assert torch.allclose(fused.g_bn.running_var, plain.g_bn.running_var)


# ---------------------------------------------------------------- CrossNorm: masks equal slices


@pytest.mark.parametrize("crop", ["neither", "style", "content", "both"])
def test_masked_cross_norm_equals_the_sliced_op_forward_and_gradients(crop):
    torch.manual_seed(0)
    x = styled_batch().requires_grad_(True)
    x_mask = x.detach().clone().requires_grad_(True)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    style_box = ((2, 9), (1, 7)) if crop in ("style", "both") else None
    content_box = ((0, 6), (3, 10)) if crop in ("content", "both") else None
    ref = cross_norm(x, perm=perm, style_box=style_box, content_box=content_box)
    out = cross_norm_masked(
        x_mask, perm=perm,
        style_mask=box_mask((12, 10), style_box) if style_box else None,
        content_mask=box_mask((12, 10), content_box) if content_box else None)
    assert torch.allclose(out, ref, atol=1e-5)
    weights = torch.randn_like(ref)
    (ref * weights).sum().backward()
    (out * weights).sum().backward()
    assert torch.allclose(x.grad, x_mask.grad, atol=1e-5)


def test_captured_unit_equals_the_pure_op_with_the_same_draws():
    x = styled_batch()
    unit = CrossNorm(crop="both").train()
    unit.active = True
    g = torch.Generator().manual_seed(0)
    draws = {"gate": torch.tensor(True), "rows": torch.randint(0, 2**62, (16,), generator=g),
             "channels": None, "boxes": torch.rand(2, 128, 5, generator=g)}
    out = unit.captured_forward(x, draws)
    perm = torch.argsort(draws["rows"][:6])
    style = box_masks((12, 10), draws["boxes"][0])
    content = box_masks((12, 10), draws["boxes"][1])
    boxes = []
    for m in (style, content):
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        boxes.append(((int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)))
        assert torch.equal(box_mask((12, 10), boxes[-1]), m)  # a mask is one box
    ref = cross_norm(x, perm=perm, style_box=boxes[0], content_box=boxes[1])
    assert torch.allclose(out, ref, atol=1e-5)
    draws["gate"] = torch.tensor(False)
    assert torch.equal(unit.captured_forward(x, draws), x)  # gated off: the input unchanged


# ---------------------------------------------------------------- the draws' distribution


def areas_of(masks):
    return torch.stack([m.float().mean() for m in masks])


@pytest.mark.parametrize("size", [8, 32])
def test_device_box_sampler_follows_the_official_distribution(size):
    g = torch.Generator().manual_seed(0)
    n = 2000
    masks = [box_masks((size, size), torch.rand(128, 4, generator=g)) for _ in range(n)]
    areas = areas_of(masks)
    assert areas.min() > 0.1  # the area threshold t
    assert areas.max() < 1.0  # never the whole map (no candidate batch was all rejected)
    host = torch.tensor([math.prod(b - a for a, b in sample_box((size, size), g)) / size**2
                         for _ in range(n)])
    # same distribution: means and quartiles of the accepted area ratios agree
    assert abs(areas.mean() - host.mean()) < 0.015
    for q in (0.25, 0.5, 0.75):
        assert abs(areas.quantile(q) - host.quantile(q)) < 0.03
    if size == 8:
        assert abs(areas.mean().item() - 0.31) < 0.02  # official.md: 0.31 on 8x8 maps


def test_device_box_sampler_threshold_and_beta():
    g = torch.Generator().manual_seed(1)
    areas = areas_of([box_masks((16, 16), torch.rand(128, 4, generator=g), threshold=0.4)
                      for _ in range(500)])
    assert areas.min() > 0.4
    # beta != 1 (Johnk's method): Beta(0.5, 0.5) puts more mass at small and large ratios
    host = torch.tensor([math.prod(b - a for a, b in sample_box((16, 16), g, beta=0.5)) / 256
                         for _ in range(1500)])
    dev = areas_of([box_masks((16, 16), torch.rand(128, 4, generator=g), beta=0.5)
                    for _ in range(1500)])
    assert abs(dev.mean() - host.mean()) < 0.02


def test_permutations_from_keys_are_uniform_and_derangements_without_self_pairing():
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4, 4)
    for _ in range(4000):
        perm = permutation_from_keys(torch.randint(0, 2**62, (4,), generator=g))
        counts[torch.arange(4), perm] += 1
        cycle = permutation_from_keys(torch.randint(0, 2**62, (4,), generator=g), False)
        assert not (cycle == torch.arange(4)).any()
        assert sorted(cycle.tolist()) == [0, 1, 2, 3]
    assert (counts / 4000 - 0.25).abs().max() < 0.03  # each sample partners each equally


def make_sites(k=4, **options):
    return [CNSN(cn=CrossNorm(**options)).train() for _ in range(k)]


def fired(sites, x):
    return [not torch.equal(s(x), x) for s in sites]


def test_capture_controller_frequencies_match_the_host_controller():
    x = styled_batch()
    sites = make_sites(4, self_pairing=False)  # no identity permutation: a chosen unit shows
    ctrl = CrossNormController([s.cn for s in sites], active_num=2, prob=0.4, seed=0)
    ctrl.enable_capture("cpu")
    steps, on_steps, per_unit = 1200, 0, torch.zeros(4)
    for _ in range(steps):
        ctrl.begin_step()
        with ctrl.step() as on:
            assert isinstance(on, torch.Tensor) and on.dtype == torch.bool
            acting = fired(sites, x)
        if bool(on):
            on_steps += 1
            assert sum(acting) == 2  # active_num distinct units
            per_unit += torch.tensor(acting, dtype=torch.float32)
        else:
            assert sum(acting) == 0
    assert abs(on_steps / steps - 0.4) < 0.05  # 3.5 sd
    assert (per_unit / on_steps - 0.5).abs().max() < 0.09  # each unit: active_num / K; 4 sd
    assert not any(s.cn.active for s in sites)  # disarmed after the forward


@pytest.mark.parametrize("mode", ["one_instance", "two_instance"])
def test_capture_one_instance_permutes_channels_two_instance_samples(mode):
    from snc.ops import channel_stats

    x = styled_batch()
    sites = make_sites(1, mode=mode)
    ctrl = CrossNormController([s.cn for s in sites], active_num=1, prob=1.0, seed=3)
    ctrl.enable_capture("cpu")
    ctrl.begin_step()
    with ctrl.step():
        out = sites[0](x)
    mean_in, _ = channel_stats(x, 1e-5)
    mean_out, _ = channel_stats(out, 1e-5)
    mean_in, mean_out = mean_in.flatten(1), mean_out.flatten(1)
    if mode == "one_instance":  # each sample keeps its own channel means, permuted
        for i in range(6):
            assert torch.allclose(mean_out[i].sort().values, mean_in[i].sort().values,
                                  atol=1e-4)
    else:  # each sample takes a sample's means, channel by channel
        for i in range(6):
            assert any(torch.allclose(mean_out[i], mean_in[j], atol=1e-4) for j in range(6))


def test_capture_controller_state_resumes_exactly():
    x = styled_batch()
    sites = make_sites(3, crop="both")
    ctrl = CrossNormController([s.cn for s in sites], active_num=1, prob=0.5, seed=5)
    ctrl.enable_capture("cpu")
    state = copy.deepcopy(ctrl.state_dict())
    assert "device_generator" in state

    def run():
        outs = []
        for _ in range(4):
            ctrl.begin_step()
            with ctrl.step():
                outs.append(torch.stack([s(x) for s in sites]))
        return outs

    first = run()
    ctrl.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(first, run(), strict=True))


def test_capture_is_refused_for_units_that_draw_on_the_host():
    from snc.ops.masked import MaskedCrossNorm

    ctrl = CrossNormController([MaskedCrossNorm()], active_num=1)
    with pytest.raises(ValueError, match="MaskedCrossNorm.*compile=false"):
        ctrl.enable_capture("cpu")
    ctrl = CrossNormController([CrossNorm(crop="both", beta=3.0)], active_num=1)
    with pytest.raises(ValueError, match="beta <= 2 only"):
        ctrl.enable_capture("cpu")


# ---------------------------------------------------------------- the compiled step


class Tiny(nn.Module):
    """conv -> BN -> CNSN -> conv -> BN -> CNSN -> pool -> linear (two CN sites)."""

    def __init__(self, sn=True, cn=True, crop="both"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        sites = []
        for _ in range(2):
            sites.append(CNSN(cn=CrossNorm(crop=crop) if cn else None,
                              sn=SelfNorm(8) if sn else None) if (sn or cn) else nn.Identity())
        self.site1, self.site2 = sites
        self.fc = nn.Linear(8, 10)
        units = [m for m in self.modules() if isinstance(m, CrossNorm)]
        self.cn_controller = CrossNormController(units, active_num=1 if units else 1, prob=0.5,
                                                 seed=0)

    def forward(self, x):
        x = self.site1(torch.relu(self.bn1(self.conv1(x))))
        x = self.site2(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


CASES = {
    "basic": (False, False, "ce"),
    "sn": (True, False, "ce"),
    "cn": (False, True, "cn"),
    "sncn": (True, True, "cn"),
    "consistency": (True, True, "consistency"),
    "augmix": (True, True, "augmix"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_compiles_with_zero_graph_breaks(case):
    sn, cn, objective = CASES[case]
    torch.manual_seed(0)
    model = Tiny(sn=sn, cn=cn).train()
    ctrl = model.cn_controller
    if len(ctrl):
        ctrl.enable_capture("cpu")
    eager = copy.deepcopy(model)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    batch = ((x, x.flip(3), x * 0.5), y) if objective == "augmix" else (x, y)
    fn = objectives.REGISTRY[objective]
    cfg = objectives.ObjectiveConfig()

    def step(model, batch):
        return fn(model, batch, model.cn_controller, cfg)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")  # a break would raise
    for _ in range(2):  # the second step reuses the graph with new draws
        for m in (model, eager):
            m.cn_controller.begin_step()
        loss, logs = compiled(model, batch)
        ref, ref_logs = step(eager, batch)
        assert torch.allclose(loss, ref, atol=1e-5)
        loss.backward()
        ref.backward()
        for a, b in zip(model.parameters(), eager.parameters(), strict=True):
            assert torch.allclose(a.grad, b.grad, atol=1e-5)
        for a, b in zip(model.buffers(), eager.buffers(), strict=True):
            assert torch.allclose(a.float(), b.float(), atol=1e-6)
        assert set(logs) == set(ref_logs)


def test_skipped_consistency_forwards_leave_batch_norm_statistics_unchanged():
    torch.manual_seed(0)
    model = Tiny().train()
    ctrl = model.cn_controller
    ctrl.prob = 0.0  # the coin never fires
    ctrl.enable_capture("cpu")
    clean_only = copy.deepcopy(model)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    ctrl.begin_step()
    loss, logs = objectives.consistency(model, (x, y), ctrl, objectives.ObjectiveConfig())
    clean_only(x)  # what the official code runs when CN is off: the clean forward alone
    for a, b in zip(model.buffers(), clean_only.buffers(), strict=True):
        assert torch.equal(a, b)
    assert float(logs["cn_on"]) == 0.0


def test_sncn_forward_compiles_fullgraph_with_inductor():
    """The house rule: the SN+CN forward compiles as one graph with the default backend
    (inductor's CPU code generation: ~25 s on one core)."""
    model = Tiny().train()
    model.cn_controller.enable_capture("cpu")
    x = torch.randn(6, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True)
    ctrl = model.cn_controller
    ctrl.prob = 1.0
    ctrl.begin_step()
    with ctrl.step():
        out = compiled(x)
    ctrl.begin_step()
    with ctrl.step():
        out2 = compiled(x)
    assert torch.isfinite(out).all() and torch.isfinite(out2).all()


# ---------------------------------------------------------------- through the engine


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # each test compiles its own graphs (no cache limit across tests)
    yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager_steps(monkeypatch):
    """The engine's CompiledStep with the aot_eager backend: the whole step is still captured
    with fullgraph (forward, backward graph, optimizer update), without C++ code generation."""
    from functools import partial

    from snc.engine import runner
    from snc.engine.loop import CompiledStep

    made = []

    def make(*args, **kwargs):
        step = partial(CompiledStep, backend="aot_eager")(*args, **kwargs)
        made.append(step)
        return step

    monkeypatch.setattr(runner, "CompiledStep", make)
    monkeypatch.setattr(runner, "compile_for_evaluation",
                        lambda model, mode: torch.compile(model, backend="aot_eager"))
    return made


def test_compiled_classify_run_resumes_exactly(make_cfg, kill_run, tmp_path, aot_eager_steps):
    from snc.engine import run
    from snc.engine.runner import run_dir_of

    overrides = ["sn=on", "cn=on", "crop=content", "cn.prob=0.5", "epochs=2", "compile=true",
                 "evaluate_corruptions=false", "evaluate.shifts=[]", "evaluate.bootstrap=0",
                 "dataset.num_train=128"]
    straight = run(make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "a")))
    assert aot_eager_steps, "compile=true did not compile the classify step"
    cfg = make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "b"))
    kill_run(cfg, at=2)  # after the first epoch's checkpoint
    assert not (run_dir_of(cfg) / "results.json").exists()
    resumed = run(cfg)
    for key in ("clean/error", "train/final_epoch_loss", "train/first_epoch_loss"):
        assert resumed[key] == straight[key], key
    a = torch.load(f"{straight['run_dir']}/ckpt/last.pt", weights_only=False)
    b = torch.load(f"{resumed['run_dir']}/ckpt/last.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "device_generator" in a["controller"]  # the device draws' state is checkpointed


@pytest.mark.parametrize("overrides, match", [
    (["compile_mode=fast"], "compile_mode='fast'; choose one of default, reduce-overhead"),
    (["compile=true", "compile_mode=reduce-overhead"], "replays CUDA graphs, but the device "
                                                       "is cpu"),
    (["compile=true", "augment=cutout"], "augment=cutout .* use compile=false"),
])
def test_compile_options_that_cannot_work_fail_before_a_run_folder_exists(make_cfg, tmp_path,
                                                                          overrides, match):
    from snc.engine import run
    from snc.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        run(make_cfg(*overrides))
    assert not (tmp_path / "outputs").exists()


def test_a_step_that_breaks_the_graph_names_it_and_the_eager_fallback():
    from snc.engine.loop import CompiledStep
    from snc.errors import ConfigError

    class HostTask:
        def training_step(self, model, batch):
            loss = model(batch).square().mean()
            if loss.item() > 0:  # reads the device: no single graph
                loss = loss * 2
            return loss, {}

    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = CompiledStep(HostTask(), model, opt, torch.device("cpu"), "none", backend="eager")
    with pytest.raises(ConfigError, match="cannot be captured as one graph.*compile=false"):
        step.forward_loss(torch.randn(4, 3))
