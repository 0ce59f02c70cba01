"""FixMatch (+ CrossNorm): augmentations against PIL, the labeled draw, the resumable stream,
the reference WRN-28-2, option errors, and the task driven step by step on tiny data."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

import snc.config  # noqa: F401  (registers the config schemas)
import snc.models.cifar.wideresnet_fm  # noqa: F401  (registers wrn28_2_fm until the package does)
from snc.augment.randaugment import OPS, RandAugmentMC, apply_op, cutout, weak_augment
from snc.data.fixmatch import FixMatchStream, labeled_split
from snc.data.synthetic import make_synthetic
from snc.engine.runner import validate
from snc.engine.schedule import fixmatch_factor
from snc.errors import ConfigError
from snc.models import build_model, count_parameters, count_units
from snc.ops import RowCrossNorm
from snc.reference.fixmatch import pil_cutout, pil_reference_op
from snc.tasks.base import RunContext
from snc.tasks.fixmatch import FixMatchTask, ModelEMA

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
TINY = ["task=fixmatch", "dataset=synthetic", "backbone=wrn28_2_fm", "device=cpu",
        "logger=none", "progress=false", "+backbone.overrides.depth=10",
        "+backbone.overrides.widen_factor=1",
        "dataset.num_train=120", "dataset.num_test=40", "task.labels=20", "batch_size=8",
        "task.mu=2", "eval_batch_size=40", "dataset.corrupted=none"]


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides, out="out"):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=[f"paths.data_dir={tmp_path / 'data'}",
                                               f"paths.output_dir={tmp_path / out}",
                                               *TINY, *overrides])
    return make


def _images(n_synthetic=12, n_random=6, seed=0):
    x, _ = make_synthetic(n_synthetic, seed, 32, 10)
    noise = np.random.default_rng(seed).integers(0, 256, (n_random, 32, 32, 3), dtype=np.uint8)
    return np.concatenate([x, noise])


def _to_tensor(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


# ----- augmentations ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
def test_each_randaugment_op_equals_the_reference_pil_op(op):
    x = _images()
    t = _to_tensor(x)
    for v in range(1, 10):  # RandAugmentMC's magnitudes: randint(1, 10)
        for sign in (1.0, -1.0):
            out = apply_op(op, t, torch.full((len(t),), v), torch.full((len(t),), sign))
            ref = np.stack([np.asarray(pil_reference_op(op, Image.fromarray(im), v, sign))
                            for im in x])
            np.testing.assert_array_equal(out.permute(0, 2, 3, 1).numpy(), ref,
                                          err_msg=f"{op} v={v} sign={sign}")


def test_cutout_equals_the_reference_with_the_same_centres():
    x = _images()
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    out = cutout(_to_tensor(x), g, 16).permute(0, 2, 3, 1).numpy()
    g.set_state(state)
    cx = (torch.rand(len(x), generator=g, dtype=torch.float64) * 32).tolist()
    cy = (torch.rand(len(x), generator=g, dtype=torch.float64) * 32).tolist()
    ref = np.stack([np.asarray(pil_cutout(Image.fromarray(im), a, b, 16))
                    for im, a, b in zip(x, cx, cy, strict=True)])
    np.testing.assert_array_equal(out, ref)
    edges = [pil_cutout(Image.fromarray(x[0]), c, c, 16) for c in (0.0, 31.99)]
    grey = [int((np.asarray(e) == 127).all(-1).sum()) for e in edges]
    assert grey[0] >= 17 * 17 - 40 and grey[1] >= 9 * 9  # inclusive 17 px box, clipped


def test_weak_view_is_flip_then_reflect_padded_crop():
    x = _images()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    out = weak_augment(_to_tensor(x), g, 4).permute(0, 2, 3, 1).numpy()
    g.set_state(state)
    flip = (torch.rand(len(x), generator=g) < 0.5).tolist()
    oy = torch.randint(0, 9, (len(x),), generator=g).tolist()
    ox = torch.randint(0, 9, (len(x),), generator=g).tolist()
    for i, im in enumerate(x):
        im = im[:, ::-1] if flip[i] else im
        padded = np.pad(im, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        np.testing.assert_array_equal(out[i], padded[oy[i]:oy[i] + 32, ox[i]:ox[i] + 32])
    assert 0 < sum(flip) < len(x)


def test_randaugment_mc_is_seeded_and_always_cuts_out():
    t = _to_tensor(_images())
    ra = RandAugmentMC(2, 10)
    a = ra(t, torch.Generator().manual_seed(1))
    b = ra(t, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == t.shape and torch.equal(a, b)
    grey = (a == 127).all(1).flatten(1).sum(1)
    assert (grey >= 81).all()  # the smallest clipped Cutout box is 9 x 9


# ----- labeled split and the stream -------------------------------------------------------------

def test_labeled_split_is_the_reference_draw():
    _, labels = make_synthetic(500, 0, 8, 10)
    idx = labeled_split(labels, 40, 10, seed=1)
    np.random.seed(1)  # the reference: set_seed(args), then x_u_split
    ref = np.concatenate([np.random.choice(np.where(labels == c)[0], 4, False)
                          for c in range(10)])
    np.testing.assert_array_equal(idx, ref)
    assert len(set(idx.tolist())) == 40
    assert np.bincount(labels[idx], minlength=10).tolist() == [4] * 10
    assert not np.array_equal(idx, labeled_split(labels, 40, 10, seed=2))


def _stream(seed=0, n=30, **kw):
    x, y = make_synthetic(n, 1, 32, 10)
    return FixMatchStream(x, y, labeled_split(y, 10, 10, 0), batch_size=4, mu=3, seed=seed,
                          **kw)


def test_stream_batches_have_the_fixmatch_layout():
    s = _stream()
    batch = next(iter(s))
    assert batch.labeled.shape == (4, 3, 32, 32) and batch.weak.shape == (12, 3, 32, 32)
    assert batch.strong.shape == batch.weak.shape and batch.targets.shape == (4,)
    assert batch.labeled.dtype == torch.float32
    assert not torch.equal(batch.weak, batch.strong)
    seen = torch.cat([s.unlabeled_stream.order])  # every image is unlabeled data
    assert sorted(seen.tolist()) == list(range(30))
    wa = _stream(strong="weak")
    wb = next(wa)
    assert (wb.strong == (127 / 255 - 0.5) / 0.5).all(1).flatten(1).sum(1).max() < 81


def test_stream_resumes_mid_stream_across_permutation_boundaries():
    s = _stream(seed=4)
    for _ in range(3):
        next(s)
    state = s.state_dict()
    expected = [next(s) for _ in range(5)]  # 5 x 12 unlabeled > 30: crosses two passes
    fresh = _stream(seed=99)
    fresh.load_state_dict(state)
    for a, b in zip(expected, [next(fresh) for _ in range(5)], strict=True):
        for ta, tb in zip(a, b, strict=True):
            assert torch.equal(ta, tb)
    other = FixMatchStream(*make_synthetic(30, 1, 32, 10)[:2], np.arange(10), batch_size=4)
    with pytest.raises(ValueError, match="different labeled subset"):
        other.load_state_dict(state)


# ----- the network -----------------------------------------------------------------------------

class _RefBlock(nn.Module):
    """kekmodel/FixMatch-pytorch models/wideresnet.py BasicBlock, verbatim in behaviour."""

    def __init__(self, i, o, stride, abr):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(i, momentum=0.001)
        self.relu1 = nn.LeakyReLU(0.1, inplace=True)
        self.conv1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o, momentum=0.001)
        self.relu2 = nn.LeakyReLU(0.1, inplace=True)
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.equalInOut = i == o
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(i, o, 1, stride, 0,
                                                                bias=False) or None
        self.abr = abr

    def forward(self, x):
        if not self.equalInOut and self.abr:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class _RefWRN(nn.Module):
    def __init__(self, num_classes, depth, k):
        super().__init__()
        ch = [16, 16 * k, 32 * k, 64 * k]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList(
            nn.Sequential(*[_RefBlock(ch[s] if j == 0 else ch[s + 1], ch[s + 1],
                                      (1, 2, 2)[s] if j == 0 else 1, s == 0) for j in range(n)])
            for s in range(3))
        self.bn1 = nn.BatchNorm2d(ch[3], momentum=0.001)
        self.relu = nn.LeakyReLU(0.1, inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for b in self.blocks:
            out = b(out)
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def test_wrn28_2_fm_has_the_reference_parameter_count_and_groups(make_cfg):
    with torch.device("meta"):
        model = build_model("wrn28_2_fm", 10)
        assert count_parameters(model) == 1_467_610
        assert count_parameters(build_model("wrn28_2_fm", 100)) == 1_479_220
        assert count_parameters(build_model("wrn28_2_fm", 10, sn=True)) == 1_467_610 + 3_584
        assert count_units(build_model("wrn28_2_fm", 10, cn=True))["cn"] == 12
    groups = FixMatchTask(make_cfg()).param_groups(model)
    assert sum(p.numel() for p in groups[1]["params"]) == 3_626
    assert groups[1]["weight_decay"] == 0.0
    assert sum(p.numel() for p in groups[0]["params"]) == 1_463_984


def test_wrn_fm_computes_what_the_reference_computes():
    torch.manual_seed(0)
    ours = build_model("wrn28_2_fm", 10, depth=16, widen_factor=2)
    ref = _RefWRN(10, 16, 2)
    ours_sd = ours.state_dict()
    ref_keys = list(ref.state_dict())
    assert len(ref_keys) == len(ours_sd)
    ref.load_state_dict(dict(zip(ref_keys, ours_sd.values(), strict=True)))
    x = torch.randn(6, 3, 32, 32)
    ours.train()
    ref.train()
    torch.testing.assert_close(ours(x), ref(x))
    for (ka, a), (kb, b) in zip(ours.state_dict().items(), ref.state_dict().items(),
                                strict=True):
        torch.testing.assert_close(a, b, msg=f"{ka} vs {kb}")  # running stats too
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))
    ours(x).sum().backward()  # the quirk blocks' bn1 never gets a gradient
    dead = [n for n, p in ours.named_parameters() if p.grad is None]
    assert dead == ["block2.0.bn1.weight", "block2.0.bn1.bias", "block3.0.bn1.weight",
                    "block3.0.bn1.bias"]


# ----- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override, match", [
    ("task.labels=25", "not divisible by the 10 classes.*task.labels=20 or 30"),
    ("task.labels=130", "12 per class.*task.labels <= 120"),
    ("task.mu=0", "task.mu=0 must be an integer >= 1"),
    ("task.threshold=0", r"must be in \(0, 1\]"),
    ("task.threshold=1.5", r"must be in \(0, 1\]"),
    ("task.cn_apply_to=unlabelled", "choose all .* unlabeled .* or strong"),
    ("task.strong=autoaugment", "choose randaugment .* or weak"),
    ("task.ema_decay=1.0", r"must be in \[0, 1\)"),
    ("+task.lables=250", "unknown task.lables"),
    ("dataset.name=imagenet", "dataset=cifar10, cifar100, synthetic or npz"),
    ("cn=on cn.active_num=4 position.blocks=[1]", "cn.active_num=4 but the model has 1 "),
    ("cn=on position=after_conv", "unknown position 'after_conv' for backbone wrn28_2_fm"),
])
def test_bad_options_fail_at_construction_naming_the_fix(make_cfg, override, match):
    with pytest.raises(ConfigError, match=match):
        FixMatchTask(make_cfg(*override.split()))


# ----- CrossNorm restricted to rows ----------------------------------------------------------

def test_row_cross_norm_leaves_rows_before_the_start_untouched():
    unit = RowCrossNorm()
    unit.generator = torch.Generator().manual_seed(0)
    unit.train()
    unit.active = True
    x = torch.randn(10, 4, 6, 6) * torch.arange(1, 11).view(10, 1, 1, 1)
    unit.row_start = 4
    out = unit(x)
    assert torch.equal(out[:4], x[:4]) and not torch.equal(out[4:], x[4:])
    unit.row_start = None
    assert not torch.equal(unit(x)[:4], x[:4])


@pytest.mark.parametrize("apply_to, untouched", [("all", 0), ("unlabeled", 8), ("strong", 24)])
def test_cn_apply_to_sets_the_rows_of_every_unit(make_cfg, tmp_path, apply_to, untouched):
    cfg = make_cfg("cn=on", "cn.prob=1.0", "cn.active_num=1", f"task.cn_apply_to={apply_to}",
                   "position=image")
    task = FixMatchTask(cfg)
    task.setup(RunContext(device=torch.device("cpu"), run_dir=tmp_path / "run", seed=0))
    unit = task.model.input_unit.cn
    seen = {}
    unit.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    task.model.train()
    batch = next(task.train)
    task.training_step(task.model, batch)
    rows = torch.cat([batch.labeled, batch.weak, batch.strong])
    assert torch.equal(seen["x"], rows)
    assert torch.equal(seen["y"][:untouched], rows[:untouched])
    assert not torch.equal(seen["y"][untouched:], rows[untouched:])
    assert isinstance(unit, RowCrossNorm) == (apply_to != "all")


# ----- the task, driven step by step --------------------------------------------------------

def _setup(cfg, run_dir, seed=0):
    torch.manual_seed(seed)
    task = FixMatchTask(cfg)
    task.setup(RunContext(device=torch.device("cpu"), run_dir=run_dir, seed=seed))
    return task


def test_task_trains_the_ema_follows_and_the_state_round_trips(make_cfg, tmp_path):
    cfg = make_cfg("cn=on", "task.threshold=0.5")
    task = _setup(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "labeled_indices.json").read_text())
    assert saved["num_labeled"] == 20 and saved["seed"] == 1
    assert saved["indices"] == task.labeled_indices.tolist()
    model, ema = task.model, task.ema
    opt = torch.optim.SGD(task.param_groups(model), lr=0.03, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    batch = next(task.train)
    model.train()
    losses = []
    for step in range(1, 13):
        before = {n: p.detach().clone() for n, p in ema.module.named_parameters()}
        loss, logs = task.training_step(model, batch)
        assert set(logs) == {"loss_x", "loss_u", "mask", "pseudo_accuracy", "cn_on"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        task.after_step(model, step)
        losses.append(loss.item())
        live = dict(model.named_parameters())
        for n, p in ema.module.named_parameters():  # ema = 0.999 ema + 0.001 live
            torch.testing.assert_close(p, 0.999 * before[n] + 0.001 * live[n].detach())
        for (_, b), (_, lb) in zip(ema.module.named_buffers(), model.named_buffers(),
                                  strict=True):
            assert torch.equal(b, lb)  # buffers are copied
    assert losses[-1] < 0.7 * losses[0]
    w = "block1.0.conv1.weight"
    assert not torch.equal(dict(ema.module.named_parameters())[w],
                           dict(model.named_parameters())[w])
    m1 = task.evaluate(model)
    m2 = task.evaluate(model)
    assert set(m1) == {"clean/error", "clean/error_best", "clean/error_last20"}
    assert m1["clean/error"] == m2["clean/error"] and len(task.history) == 2
    state = task.state_dict()
    fresh = _setup(cfg, tmp_path / "run2", seed=1)
    fresh.load_state_dict(state)
    assert fresh.history == task.history
    for a, b in zip(fresh.ema.state_dict().values(), task.ema.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert fresh.evaluate(fresh.model)["clean/error"] == m1["clean/error"]
    other = _setup(make_cfg("cn=on", "task.label_seed=5"), tmp_path / "run3")
    with pytest.raises(ConfigError, match="different labeled subset"):
        other.load_state_dict(state)


def test_unlabeled_loss_is_divided_by_all_unlabeled_images(make_cfg, tmp_path):
    task = _setup(make_cfg("task.lambda_u=2.0"), tmp_path / "run")
    batch = next(task.train)
    task.model.train()
    b, u = len(batch.labeled), len(batch.weak)
    with torch.no_grad():  # no CN: the forward is deterministic in train mode
        logits = task.model(torch.cat([batch.labeled, batch.weak, batch.strong]))
    confidence, pseudo = torch.softmax(logits[b:b + u], -1).max(-1)
    threshold = float(confidence.median())  # about half the pseudo-labels pass
    task.opts = dataclasses.replace(task.opts, threshold=threshold)
    mask = (confidence >= threshold).float()
    assert 0 < mask.sum() < u
    expected_u = (F.cross_entropy(logits[b + u:], pseudo, reduction="none") * mask).sum() / u
    loss, logs = task.training_step(task.model, batch)
    torch.testing.assert_close(logs["loss_u"], expected_u)
    torch.testing.assert_close(logs["loss_x"], F.cross_entropy(logits[:b], batch.targets))
    torch.testing.assert_close(loss, logs["loss_x"] + 2.0 * expected_u)
    assert float(logs["mask"]) == pytest.approx(float(mask.mean()))


def test_the_engine_runs_the_task_and_evaluates_a_generated_corrupted_set(make_cfg, tmp_path):
    from snc.engine import run

    cfg = make_cfg("dataset.corrupted=generate", "dataset.corruptions=[contrast]",
                   "task.labels=10", "task.strong=weak", "max_steps=4", "eval_every_steps=2")
    results = run(cfg)
    assert results["num_evaluations"] == 2 and results["corrupted_set"] == "generated"
    for s in range(1, 6):
        assert 0 <= results[f"corruption/contrast/s{s}/error"] <= 100
    assert results["task"] == "fixmatch" and results["num_labeled"] == 10
    run_dir = Path(results["run_dir"])
    assert json.loads((run_dir / "results.json").read_text())["clean/error"] == \
        results["clean/error"]
    assert json.loads((run_dir / "labeled_indices.json").read_text())["num_labeled"] == 10


def test_schedule_and_engine_keys():
    assert fixmatch_factor(100)(0) == 1.0  # the engine's schedule.name=fixmatch
    assert 0.03 * fixmatch_factor(100)(100) == pytest.approx(0.00585, abs=1e-5)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["task=fixmatch"])
    assert cfg.task.name == "fixmatch" and cfg.max_steps == 2**20
    assert cfg.eval_every_steps == 1024 and cfg.schedule.name == "fixmatch"
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.nesterov and cfg.optimizer.lr == 0.03
    assert cfg.batch_size == 64 and cfg.task.mu == 7 and cfg.task.threshold == 0.95


FIG4 = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("fig4_*.yaml"))


def test_fig4_presets_cover_the_grid_and_build():
    assert len(FIG4) == 12
    seen = set()
    for name in FIG4 + ["fixmatch_demo"]:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={name}", "logger=none"])
        task = validate(cfg)  # the engine's checks, then FixMatchTask(cfg)
        assert isinstance(task, FixMatchTask)
        with torch.device("meta"):
            model = task.build_model()
        cn = count_units(model)["cn"]
        if name == "fixmatch_demo":
            continue
        assert cfg.backbone.name == "wrn28_2_fm" and cfg.dataset.name == "cifar10"
        assert cfg.dataset.mean[0] == 0.4914  # FixMatch's CIFAR-10 normalization
        assert cn == (12 if cfg.cn.name == "on" else 0)
        seen.add((cfg.task.strong, cfg.task.labels,
                  cfg.task.cn_apply_to if cfg.cn.name == "on" else "none"))
    assert len(seen) == 12


def _checkpoint(task, opt, sched):
    return {"model": task.model.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "task": task.state_dict(),
            "train": task.train.state_dict(), "cn": task.model.cn_controller.state_dict()}


def _run(task, steps, state=None, start=1, total=6):
    opt = torch.optim.SGD(task.param_groups(task.model), lr=0.03, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fixmatch_factor(total))
    if state is not None:
        task.model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        task.load_state_dict(state["task"])
        task.train.load_state_dict(state["train"])
        task.model.cn_controller.load_state_dict(state["cn"])
    task.model.train()
    for step in range(start, start + steps):
        loss, _ = task.training_step(task.model, next(task.train))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        task.after_step(task.model, step)
        if step % 2 == 0:
            task.evaluate(task.model)
    return _checkpoint(task, opt, sched)


def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(make_cfg, tmp_path):
    cfg = make_cfg("cn=on", "cn.prob=0.5", "task.cn_apply_to=unlabeled", "task.threshold=0.3")
    whole = _run(_setup(cfg, tmp_path / "a"), 6)
    half = _run(_setup(cfg, tmp_path / "b"), 3)
    resumed = _run(_setup(cfg, tmp_path / "c", seed=0), 3, state=half, start=4)
    for a, b in zip(whole["task"]["ema"].values(), resumed["task"]["ema"].values(),
                    strict=True):
        assert torch.equal(a, b)
    assert torch.equal(whole["task"]["history"], resumed["task"]["history"])
    assert len(whole["task"]["history"]) == 3


def test_two_runs_with_one_seed_give_one_result(make_cfg):
    from snc.engine import run

    extra = ("cn=on", "task.labels=10", "max_steps=3", "eval_every_steps=3")
    first, second = run(make_cfg(*extra, out="a")), run(make_cfg(*extra, out="b"))
    drop = ("run_dir", "time/train_seconds", "time/eval_seconds", "corrupted_dir")
    assert {k: v for k, v in first.items() if k not in drop} == \
        {k: v for k, v in second.items() if k not in drop}
    task = FixMatchTask(make_cfg())
    task.setup(RunContext(device=torch.device("cpu"), run_dir=Path(first["run_dir"]), seed=0))
    ema = ModelEMA(task.model, decay=0.0)  # decay 0: the average is the live model
    ema.update(task.model)
    for a, b in zip(ema.state_dict().values(), task.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_an_interrupted_engine_run_resumes_to_the_uninterrupted_result(make_cfg, monkeypatch):
    from snc.engine import run

    extra = ("cn=on", "task.cn_apply_to=unlabeled", "task.threshold=0.3", "max_steps=6",
             "eval_every_steps=2")
    whole = run(make_cfg(*extra, out="whole"))
    evaluate = FixMatchTask.evaluate
    calls = []

    def preempted(self, model):  # dies in the second periodic evaluation, after 4 steps
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("preempted")
        return evaluate(self, model)

    monkeypatch.setattr(FixMatchTask, "evaluate", preempted)
    with pytest.raises(RuntimeError, match="preempted"):
        run(make_cfg(*extra, out="cut"))
    monkeypatch.setattr(FixMatchTask, "evaluate", evaluate)
    resumed = run(make_cfg(*extra, out="cut"))
    keys = ["clean/error", "clean/error_best", "clean/error_last20", "num_evaluations"]
    assert [resumed[k] for k in keys] == [whole[k] for k in keys]
    assert whole["num_evaluations"] == 3


@pytest.mark.parametrize("dataset,mean,std", [
    ("cifar10", [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]),
    ("cifar100", [0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
])
def test_fixmatch_normalizes_cifar_as_its_recipe_without_a_preset(dataset, mean, std):
    """kekmodel/FixMatch-pytorch normalizes with the CIFAR mean and std; the dataset group's
    0.5/0.5 is the CrossNorm scripts' choice and stays for task=classify."""
    from conftest import CONFIG_DIR
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["task=fixmatch", f"dataset={dataset}"])
        plain = compose("train", overrides=[f"dataset={dataset}"])
    assert list(cfg.dataset.mean) == mean and list(cfg.dataset.std) == std
    assert list(plain.dataset.mean) == [0.5, 0.5, 0.5]
