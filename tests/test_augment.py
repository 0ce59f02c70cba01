"""The Table 1 baseline augmentations (``augment`` group): statistics of each op, PGD, the
mixed-label objectives, config errors and a tiny training run per option."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from snc.augment.augmix import normalize
from snc.augment.baselines import (
    AutoAugment,
    BatchAugment,
    CutMix,
    Cutout,
    MixedLabels,
    Mixup,
    cutmix_box,
    cutout_boxes,
    pgd_linf,
    sample_lambda,
    to_uint8,
)
from snc.engine import run as run_entry
from snc.engine.runner import run_dir_of, validate
from snc.errors import ConfigError
from snc.tasks.objectives import cross_entropy

MEAN = torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1)
STD = torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)


def gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ----- Cutout ------------------------------------------------------------------------------------
def test_cutout_area_matches_the_clipped_square_distribution():
    size, side, n = 16, 32, 4000
    x = torch.randn(n, 3, side, side)
    out = Cutout(size)(x, gen())
    zeroed = (out == 0).all(dim=1)  # (N, H, W); randn is never exactly 0
    assert torch.equal(out[~zeroed[:, None].expand_as(x)], x[~zeroed[:, None].expand_as(x)])
    # each image: one axis-aligned rectangle at most 16 x 16
    rows, cols = zeroed.any(2), zeroed.any(1)
    h, w = rows.sum(1), cols.sum(1)
    assert torch.equal(zeroed.sum((1, 2)), h * w) and h.max() <= size and w.max() <= size
    # expected clipped side: centre uniform over the 32 pixels, [c - 8, c + 8) clipped
    c = np.arange(side)
    lengths = np.minimum(c + size // 2, side) - np.maximum(c - size // 2, 0)
    expected_area = lengths.mean() ** 2  # independent axes
    assert abs(zeroed.sum((1, 2)).float().mean().item() - expected_area) < 0.03 * expected_area
    assert (h * w == size * size).float().mean() == pytest.approx((lengths == size).mean() ** 2,
                                                                   abs=0.03)


def test_cutout_boxes_are_the_reference_clipping():
    boxes = cutout_boxes(1000, 32, 32, 16, gen(1))
    cy = (boxes[:, 0] + boxes[:, 1]) // 2
    assert boxes[:, 0].min() == 0 and boxes[:, 1].max() == 32
    assert ((boxes[:, 1] - boxes[:, 0]) <= 16).all() and (boxes[:, 0] < boxes[:, 1]).all()
    assert len(cy.unique()) > 20


# ----- Mixup -------------------------------------------------------------------------------------
def test_mixup_lambda_is_beta_and_the_mix_matches_the_labels():
    lams = np.array([sample_lambda(1.0, g) for g in [gen(0)] for _ in range(4000)])
    # Beta(1, 1) = U(0, 1): mean 1/2, variance 1/12, flat deciles
    assert lams.mean() == pytest.approx(0.5, abs=0.02)
    assert lams.var() == pytest.approx(1 / 12, abs=0.006)
    counts = np.histogram(lams, bins=10, range=(0, 1))[0]
    assert counts.min() > 330 and counts.max() < 470
    small = np.array([sample_lambda(0.2, gen(k)) for k in range(2000)])
    assert ((small < 0.1) | (small > 0.9)).mean() > 0.6  # U-shaped for alpha < 1

    y = torch.arange(64)
    x = y.float().view(-1, 1, 1, 1).expand(64, 3, 4, 4).clone()  # image i is the constant i
    mixed, labels = Mixup(1.0)(x, y, gen(3))
    assert isinstance(labels, MixedLabels) and 0 < labels.lam < 1
    assert torch.equal(labels.a, y) and sorted(labels.b.tolist()) == y.tolist()  # a permutation
    expected = labels.lam * y.float() + (1 - labels.lam) * labels.b.float()
    assert torch.allclose(mixed[:, 0, 0, 0], expected, atol=1e-5)


def test_mixed_label_loss_equals_soft_target_ce():
    logits = torch.randn(8, 5)
    labels = MixedLabels(torch.randint(5, (8,)), torch.randint(5, (8,)), 0.3)
    soft = labels.soft(5)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(cross_entropy(logits, labels), expected, atol=1e-6)
    y = torch.randint(5, (8,))
    assert torch.equal(cross_entropy(logits, y), nn.functional.cross_entropy(logits, y))


# ----- CutMix ------------------------------------------------------------------------------------
def test_cutmix_box_and_lambda_are_consistent():
    y = torch.arange(32)
    x = y.float().view(-1, 1, 1, 1).expand(32, 3, 32, 32).clone()
    g, lams = gen(5), []
    for _ in range(300):
        mixed, labels = CutMix(1.0, 1.0)(x, y, g)
        assert isinstance(labels, MixedLabels)
        pasted = mixed[:, 0] != y.float().view(-1, 1, 1)  # pixels from the partner image
        moved = labels.b != labels.a
        area = 1 - labels.lam
        # every image whose partner differs has exactly the box area from that partner
        frac = pasted.float().mean((1, 2))
        assert torch.allclose(frac[moved], torch.full_like(frac[moved], area), atol=1e-6)
        assert torch.all(mixed[:, 0][pasted] == labels.b.float().view(-1, 1, 1)
                         .expand_as(pasted)[pasted])
        lams.append(labels.lam)
    lams = np.array(lams)
    assert lams.min() >= 0 and lams.max() <= 1
    # clipping only shrinks boxes: lam is stochastically above U(0, 1)
    assert lams.mean() > 0.5


def test_cutmix_box_equals_torchvision_v2_formula():
    # v2 CutMix: half side int(0.5 * sqrt(1 - lam) * W) around a uniform centre, clamped
    for lam in (0.1, 0.37, 0.5, 0.93):
        g1, g2 = gen(11), gen(11)
        y1, y2, x1, x2 = cutmix_box(32, 32, lam, g1)
        cy, cx = int(torch.randint(0, 32, (1,), generator=g2)), int(
            torch.randint(0, 32, (1,), generator=g2))
        half = int(0.5 * np.sqrt(1 - lam) * 32)
        assert (y1, y2, x1, x2) == (max(cy - half, 0), min(cy + half, 32), max(cx - half, 0),
                                    min(cx + half, 32))


def test_cutmix_prob_skips_batches():
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    g = gen(2)
    mixed = [isinstance(CutMix(1.0, 0.5)(x, y, g)[1], MixedLabels) for _ in range(400)]
    assert 0.4 < np.mean(mixed) < 0.6


# ----- AutoAugment ------------------------------------------------------------------------
def test_autoaugment_draws_one_subpolicy_per_image_with_its_probabilities():
    aa = AutoAugment("cifar10")
    assert len(aa.policies) == 25
    sub, applied, negated = aa.draw(50_000, gen(0))
    counts = torch.bincount(sub, minlength=25).float()
    assert (counts / 2000 - 1).abs().max() < 0.12  # uniform over the 25
    for k, policy in enumerate(aa.policies):
        for step in range(2):
            rate = applied[sub == k, step].float().mean().item()
            assert rate == pytest.approx(policy[step][1], abs=0.05)
    assert negated.float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_autoaugment_per_image_equals_torchvision_ops():
    aa = AutoAugment("cifar10")
    images = torch.randint(0, 256, (25, 3, 32, 32), dtype=torch.uint8)
    for negate in (False, True):
        aa.draw = lambda b, g, negate=negate: (
            torch.arange(25), torch.ones(25, 2, dtype=torch.bool), torch.full((25, 2), negate))
        out = aa.augment_uint8(images, gen())
        tf = aa.transform
        for k, policy in enumerate(aa.policies):
            ref = images[k:k + 1]
            for name, _, idx in policy:
                fn, signed = tf._AUGMENTATION_SPACE[name]
                mags = fn(10, 32, 32)
                m = 0.0 if mags is None else float(mags[idx])
                if signed and negate:
                    m = -m
                ref = tf._apply_image_or_video_transform(ref, name, m,
                                                         interpolation=tf.interpolation,
                                                         fill=tf._fill)
            assert torch.equal(out[k], ref[0]), (k, policy)


def test_normalized_batches_round_trip_to_uint8_exactly():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(to_uint8(normalize(images, MEAN, STD), MEAN, STD), images)
    x = normalize(images, MEAN, STD)
    out = AutoAugment()(x, gen(4), MEAN, STD)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert not torch.equal(out, x)


# ----- PGD ---------------------------------------------------------------------------------------
def test_pgd_increases_the_loss_and_respects_epsilon():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    x, y = normalize(images, MEAN, STD), torch.randint(10, (32,))
    eps = 8 / 255
    adv = pgd_linf(model, x, y, epsilon=eps, step_size=2 / 255, steps=7, mean=MEAN, std=STD,
                   generator=gen())
    ce = nn.functional.cross_entropy
    assert ce(model(adv), y) > ce(model(x), y) + 1e-3
    pixels, clean = adv * STD + MEAN, x * STD + MEAN
    assert (pixels - clean).abs().max() <= eps + 1e-5
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert all(p.grad is None for p in model.parameters())  # only the input got gradients
    # more steps, stronger attack; no steps and no start: the clean batch
    weak = pgd_linf(model, x, y, epsilon=eps, step_size=2 / 255, steps=1, mean=MEAN, std=STD,
                    generator=gen(), random_start=False)
    assert ce(model(adv), y) >= ce(model(weak), y) - 1e-4


# ----- config, objectives, runs ------------------------------------------------------------
@pytest.mark.parametrize("overrides, match", [
    (["augment.name=bogus"], "unknown augment 'bogus'"),
    (["augment=mixup", "augment.alpha=0"], "alpha > 0"),
    (["augment=cutmix", "augment.alpha=-1"], "alpha > 0"),
    (["augment=cutmix", "augment.prob=0"], "augment.prob"),
    (["augment=cutout", "augment.size=0"], "augment.size"),
    (["augment=autoaugment", "augment.policy=cifar11"], "augment.policy"),
    (["augment=adversarial", "augment.steps=0"], "steps >= 1"),
    (["augment=cutout", "augmix=on"], "cannot combine with objective=augmix"),
    (["augment=mixup", "augmix=on", "cn=on"], "augmix=off"),
])
def test_bad_augment_options_fail_before_training(make_cfg, overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(*overrides))


def test_unknown_augment_group_option_is_refused_by_hydra(make_cfg):
    with pytest.raises(Exception, match="fancy"):
        make_cfg("augment=fancy")


def test_augment_none_builds_and_draws_nothing(make_cfg):
    task = validate(make_cfg())
    assert task.augment == "none" and task.batch_augment is None
    assert task.state_dict() == {} and task.method() == "basic"


OPTIONS = ["cutout", "mixup", "cutmix", "autoaugment", "adversarial"]


@pytest.mark.parametrize("option", OPTIONS)
def test_tiny_training_run_per_option(make_cfg, option):
    extra = ["augment.steps=2"] if option == "adversarial" else []
    cfg = make_cfg(f"augment={option}", *extra, "epochs=1", "evaluate_corruptions=false",
                   "dataset.num_train=64", "log_every=1")
    results = run_entry(cfg)
    assert 0 <= results["clean/error"] <= 100
    assert np.isfinite(results["train/final_epoch_loss"])
    stored = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert stored["clean/error"] == results["clean/error"]
    assert f"-{option}-" in Path(results["run_dir"]).name


@pytest.mark.parametrize("overrides", [
    ["augment=mixup", "cn=on", "cn.prob=1.0"],                     # objective cn
    ["augment=cutmix", "cn=on", "objective=consistency", "cn.prob=1.0"],
    ["augment=adversarial", "augment.steps=1", "sn=on", "cn=on"],
])
def test_augment_composes_with_sn_and_cn_objectives(make_cfg, overrides):
    cfg = make_cfg(*overrides, "epochs=1", "evaluate_corruptions=false", "dataset.num_train=64",
                   "log_every=1")
    results = run_entry(cfg)
    lines = [json.loads(x) for x in (Path(results["run_dir"]) / "metrics.jsonl").read_text()
             .splitlines() if "train/loss" in x]
    assert lines and all(np.isfinite(line["train/loss"]) for line in lines)


def test_batch_augment_is_seeded_and_checkpointed():
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    a = BatchAugment("mixup", {"alpha": 1.0}, [0.5] * 3, [0.25] * 3, seed=3, device="cpu")
    state = a.state_dict()
    first = a(None, (x, y))
    a.load_state_dict(state)
    again = a(None, (x, y))
    assert torch.equal(first[0], again[0]) and first[1].lam == again[1].lam


def test_kill_and_resume_with_an_augment_equals_an_uninterrupted_run(make_cfg, monkeypatch,
                                                                     tmp_path):
    from snc.engine import runner as run_module

    overrides = ["augment=cutmix", "epochs=3", "evaluate_corruptions=false",
                 "dataset.num_train=96"]
    straight = run_entry(make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "a")))
    calls = {"n": 0}
    real = run_module.train_steps

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_steps", dying)
    cfg = make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        run_entry(cfg)
    assert not (run_dir_of(cfg) / "results.json").exists()
    monkeypatch.setattr(run_module, "train_steps", real)
    resumed = run_entry(cfg)
    for key in ("clean/error", "train/final_epoch_loss", "train/first_epoch_loss"):
        assert resumed[key] == straight[key], key


BASELINE_PRESETS = {"cutout": ("cutout", "Cutout"), "mixup": ("mixup", "Mixup"),
                    "cutmix": ("cutmix", "CutMix"), "autoaugment": ("autoaugment", "AutoAug"),
                    "advtrain": ("adversarial", "AdvTr.")}


@pytest.mark.parametrize("suffix", sorted(BASELINE_PRESETS))
def test_table1_baseline_presets_name_their_option_and_cell(make_cfg, suffix):
    option, column = BASELINE_PRESETS[suffix]
    for dataset in ("cifar10", "cifar100"):
        for backbone in ("allconv", "densenet40_12", "wrn40_2", "resnext29_4x32d"):
            cfg = make_cfg(f"experiment=table1_{dataset}_{backbone}_{suffix}", tiny=False)
            assert cfg.augment.name == option and cfg.augmix.enabled is False
            assert cfg.sn.name == "off" and cfg.cn.name == "off"
            (cell,) = cfg.paper.cells
            assert (cell.table, cell.column, cell.dataset) == ("table1", column, dataset)


def test_a_baseline_preset_fills_its_table1_cell_in_the_report(tmp_path):
    import csv
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    cmd = [sys.executable, str(root / "train.py"), "experiment=table1_cifar10_wrn40_2_mixup",
           "dataset=synthetic", "backbone=wrn16_2", "+backbone.overrides.depth=10",
           "+backbone.overrides.widen_factor=1", "dataset.num_train=64", "dataset.num_test=32",
           "epochs=1", "batch_size=32", "eval_batch_size=32", "device=cpu", "logger=none",
           "progress=false", f"paths.output_dir={out}", f"paths.data_dir={tmp_path / 'data'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "report.py"), str(out),
                           "--out", str(tmp_path / "report")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "report" / "report.csv")))
    assert {(r["table"], r["row"], r["column"]) for r in rows} == {
        ("table1", "WideResNet", "Mixup")}
    assert float(rows[0]["published"]) == 22.3 and rows[0]["ours"]
