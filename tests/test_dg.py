"""Domain generalization: folders, DomainBed's splits, device-side batches, the dg task, the
selection rules and the protocols' configs."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from snc.config import domainbed_hparam
from snc.data.dg import (
    CropOptions,
    DomainBatches,
    _hsv_to_rgb,
    _rgb_to_hsv,
    crop_resize,
    decode_domains,
    jitter_op,
    resized_crop_boxes,
    scan_domains,
    seed_hash,
    split_domain,
    write_domain_folder,
)
from snc.engine import run
from snc.errors import ConfigError
from snc.report import selection

DG = ["device=cpu", "logger=none", "progress=false", "backbone=wrn16_2",
      "+backbone.overrides.depth=10", "+backbone.overrides.widen_factor=1", "log_every=4",
      "task=dg", "dataset=dg_synthetic", "dataset.per_class=6", "dataset.image_size=16",
      "batch_size=4", "eval_batch_size=64", "task.crop.scale=[0.6,1.0]"]


# ----------------------------------------------------------------------------- folders, splits

def _folder(root: Path, layout):
    for domain, classes in layout.items():
        for cls, names in classes.items():
            (root / domain / cls).mkdir(parents=True, exist_ok=True)
            for name in names:
                if name.endswith(".txt"):
                    (root / domain / cls / name).write_text("not an image")
                else:
                    Image.new("RGB", (5, 4), (10, 20, 30)).save(root / domain / cls / name)
    return root


def test_the_listing_is_imagefolder_order_per_domain(tmp_path):
    root = _folder(tmp_path / "set", {
        "b": {"dog": ["2.jpg", "10.jpg"], "cat": ["z.png", "a.png"]},
        "a": {"dog": ["x.jpg"], "cat": ["y.jpg"]}})
    folder = scan_domains(root)
    assert folder.domains == ("a", "b") and folder.classes == ("cat", "dog")
    for d in folder.domains:
        want = torchvision.datasets.ImageFolder(str(root / d)).samples
        assert [(str(root / rel), label) for rel, label in folder.files[d]] == \
            [(p, label) for p, label in want]
    assert scan_domains(root, ["b"]).domains == ("b",)
    before = folder.digest()
    assert before == scan_domains(root).digest()
    (root / "a" / "cat" / "y.jpg").write_bytes(b"more bytes than before")
    assert scan_domains(root).digest() != before


@pytest.mark.parametrize("layout, domains, message", [
    ({"a": {"cat": ["1.jpg"]}}, ["a", "zz"], "no domain folder zz"),
    ({"a": {"cat": ["1.jpg"]}, "b": {"dog": ["1.jpg"]}}, None, "missing cat; unexpected dog"),
    ({"a": {"cat": ["1.jpg"]}, "b": {"cat": ["notes.txt"]}}, None, "has no image"),
])
def test_a_broken_folder_is_named(tmp_path, layout, domains, message):
    root = _folder(tmp_path / "set", layout)
    with pytest.raises(ConfigError, match=message):
        scan_domains(root, domains)


def test_a_missing_folder_gives_the_message_it_is_handed(tmp_path):
    with pytest.raises(ConfigError, match="run this"):
        scan_domains(tmp_path / "nothing", missing="run this")


def test_splits_are_domainbeds():
    # DomainBed misc.seed_hash: md5 of str(args); split_dataset: RandomState(seed) shuffles
    # range(n), the first int(n * holdout) keys are the out split
    assert seed_hash(0, 1) == int(hashlib.md5(b"(0, 1)").hexdigest(), 16) % 2 ** 31
    keys = list(range(50))
    np.random.RandomState(seed_hash(3, 2)).shuffle(keys)
    inn, out = split_domain(50, 0.2, 3, 2)
    assert out.tolist() == keys[:10] and inn.tolist() == keys[10:]
    assert sorted(inn.tolist() + out.tolist()) == list(range(50))
    assert split_domain(50, 0.2, 4, 2)[1].tolist() != out.tolist()


def test_decoding_resizes_as_torchvision_and_caches(tmp_path):
    root = tmp_path / "set"
    (root / "a" / "cat").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(root / "a" / "cat" / "0.png")
    folder = scan_domains(root)
    out = decode_domains(folder, 12, tmp_path / "cache")["a"]
    want = np.asarray(TF.resize(Image.fromarray(arr), [12, 12]))
    assert out.shape == (1, 12, 12, 3) and np.array_equal(out[0], want)
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1
    again = decode_domains(folder, 12, tmp_path / "cache")["a"]
    assert isinstance(again, np.memmap) and np.array_equal(again, out)


def test_an_unreadable_image_is_named(tmp_path):
    root = _folder(tmp_path / "set", {"a": {"cat": ["1.jpg"]}})
    (root / "a" / "cat" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError, match="2.jpg cannot be read"):
        decode_domains(scan_domains(root), 8)


# ----------------------------------------------------------------------------- augmentation

def test_resized_crop_boxes_follow_torchvisions_distribution():
    n, h, w = 20000, 40, 60
    g = torch.Generator().manual_seed(0)
    ours = resized_crop_boxes(n, h, w, (0.08, 1.0), (3 / 4, 4 / 3), g)
    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    ref = torch.tensor([torchvision.transforms.RandomResizedCrop.get_params(
        img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)], dtype=torch.float32)
    for col in range(4):
        a, b = ours[:, col], ref[:, col]
        assert abs(a.mean() - b.mean()) < 0.03 * b.mean() + 0.2, col
        assert abs(a.std() - b.std()) < 0.05 * b.std() + 0.2, col
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= w).all()
    # the fallback: no try fits -> torchvision's centre crop
    g = torch.Generator().manual_seed(1)
    boxes = resized_crop_boxes(5, 10, 40, (0.99, 1.0), (0.99, 1.01), g)
    assert boxes.tolist() == [[0, 15, 10, 10]] * 5


def test_crop_resize_equals_interpolating_the_crop():
    x = torch.rand(2, 3, 30, 40)
    boxes = torch.tensor([[2., 5., 24., 32.], [0., 0., 30., 40.]])
    out = crop_resize(x, boxes, 16)
    for i, (t, left, h, w) in enumerate(boxes.int().tolist()):
        want = torch.nn.functional.interpolate(x[i:i + 1, :, t:t + h, left:left + w], (16, 16),
                                               mode="bilinear", align_corners=False)
        assert torch.allclose(out[i:i + 1], want, atol=1e-5)


@pytest.mark.parametrize("op, fn, factor", [
    (0, TF.adjust_brightness, 1.3), (1, TF.adjust_contrast, 0.7),
    (2, TF.adjust_saturation, 1.25), (3, TF.adjust_hue, -0.2)])
def test_each_jitter_is_torchvisions(op, fn, factor):
    x = torch.rand(3, 3, 9, 9)
    got = jitter_op(op, x, torch.full((3,), factor))
    want = torch.stack([fn(xi, factor) for xi in x])
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5)


def _domain_images(values, n):
    """Per domain, n images filled with that domain's value (so a batch tells its domains)."""
    return ([torch.full((n, 8, 8, 3), v, dtype=torch.uint8) for v in values],
            [torch.arange(n) + 100 * i for i in range(len(values))])


def test_balanced_batches_hold_each_domain_in_order_and_resume_exactly():
    images, labels = _domain_images([0, 128, 255], 10)
    opts = CropOptions(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    stream = DomainBatches(images, labels, "balanced", 4, opts, (0, 0, 0), (1, 1, 1), "cpu", 0,
                           endless=True)
    x, y = next(stream)
    assert x.shape == (12, 3, 8, 8)
    assert (y[:4] < 100).all() and ((y[4:8] >= 100) & (y[4:8] < 200)).all() and (y[8:] >= 200).all()
    assert torch.allclose(x[4:8], torch.full_like(x[4:8], 128 / 255))
    state = stream.state_dict()
    a = [next(stream) for _ in range(3)]
    stream.load_state_dict(state)
    b = [next(stream) for _ in range(3)]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1])
               for p, q in zip(a, b, strict=True))


def test_random_batches_see_every_training_image_once_per_epoch():
    images, labels = _domain_images([0, 255], 9)
    opts = CropOptions(size=8, flip=True)
    stream = DomainBatches(images, labels, "random", 6, opts, (0, 0, 0), (1, 1, 1), "cpu", 3)
    assert len(stream) == 3
    seen = torch.cat([y for _, y in stream])
    assert sorted(seen.tolist()) == sorted(torch.cat(labels).tolist())


# ----------------------------------------------------------------------------- the task

def test_a_dg_run_trains_evaluates_every_domain_and_selects(make_cfg):
    results = run(make_cfg(*DG, "epochs=4", "optimizer.lr=0.05", tiny=False))
    dg = results["dg"]
    assert dg["test_domain"] == "sketch" and dg["held_out"] == ["sketch"]
    assert dg["source_domains"] == ["photo", "painting", "noise"]
    assert len(dg["history"]) == 4  # an evaluation per epoch (eval_every: 1)
    assert results["train/final_epoch_loss"] < results["train/first_epoch_loss"]
    last = dg["history"][-1]["domains"]
    for d in dg["domains"]:
        a = last[d]
        assert a["n_in"] + a["n_out"] == 24 and a["n_out"] == int(24 * 0.2)
        both = (a["in"] * a["n_in"] + a["out"] * a["n_out"]) / 24
        assert results[f"{d}/accuracy"] == pytest.approx(both)
    assert results["test/accuracy"] == last["sketch"]["in"] == results["test/accuracy@last"]
    vals = [np.mean([h["domains"][d]["out"] for d in dg["source_domains"]])
            for h in dg["history"]]
    best = int(np.argmax(vals))
    assert results["val/accuracy@training_domain"] == pytest.approx(vals[best])
    chosen = dg["history"][best]["domains"]["sketch"]["in"]
    assert results["test/accuracy@training_domain"] == chosen
    assert results["test/accuracy@oracle"] == results["test/accuracy@last"]


def test_a_killed_dg_run_resumes_exactly(make_cfg, kill_run, tmp_path):
    overrides = [*DG, "epochs=3"]
    straight = run(make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "a"), tiny=False))
    cfg = make_cfg(*overrides, "paths.output_dir=" + str(tmp_path / "b"), tiny=False)
    kill_run(cfg, at=3)
    resumed = run(cfg)
    assert resumed["dg"]["history"] == straight["dg"]["history"]
    assert resumed["test/accuracy@training_domain"] == straight["test/accuracy@training_domain"]


def test_single_source_and_step_based_domainbed_batches(make_cfg):
    results = run(make_cfg(*DG, "dataset.source_domains=[photo]", "max_steps=6",
                           "eval_every_steps=3", "task.freeze_bn=true", "task.crop.jitter=0.3",
                           "task.crop.grayscale=0.1", tiny=False))
    dg = results["dg"]
    assert dg["source_domains"] == ["photo"]
    assert sorted(dg["held_out"]) == ["noise", "painting", "sketch"]
    assert [h["step"] for h in dg["history"]] == [3, 6]
    assert "from_photo" in results["run_dir"]


def test_frozen_batchnorm_keeps_its_running_statistics(make_cfg):
    from snc.tasks.base import RunContext
    from snc.tasks.dg import DomainGeneralization

    cfg = make_cfg(*DG, "task.freeze_bn=true", tiny=False)
    task = DomainGeneralization(cfg)
    task.fetch()
    task.setup(RunContext(device=torch.device("cpu"), run_dir=Path(cfg.paths.output_dir)))
    bn = task._bns[0]
    before = bn.running_mean.clone()
    task.model.train()
    task.before_step()
    task.training_step(task.model, next(iter(task.train)))[0].backward()
    assert torch.equal(bn.running_mean, before) and bn.weight.grad is not None


@pytest.mark.parametrize("overrides, message", [
    (["dataset.test_domain=cartoon"], "has the domains photo, painting, sketch, noise"),
    (["dataset.source_domains=[photo,sketch]"], "includes the test domain sketch"),
    (["dataset.source_domains=[moon]"], "does not have"),
    (["task.sampling=weighted"], "choose balanced"),
    (["task.test_split=out"], "choose in"),
    (["task.holdout=0"], "validation fraction"),
    (["style=mixstyle", "style.mix=crossdomain", "dataset.source_domains=[photo]"],
     "one source domain"),
    (["style=mixstyle", "style.mix=crossdomain"], "exactly two"),
    (["task.dropout=1.0"], r"must be in \[0, 1\)"),
])
def test_bad_dg_input_is_refused_before_anything_is_written(make_cfg, tmp_path, overrides,
                                                            message):
    from snc.engine.runner import validate

    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*DG, *overrides, tiny=False))
    assert not (tmp_path / "outputs").exists()


def test_a_dataset_without_domains_is_refused(make_cfg):
    from snc.engine.runner import validate

    with pytest.raises(ConfigError, match="dataset=synthetic has no domains"):
        validate(make_cfg("task=dg"))


def _cn_on(results):
    rows = [json.loads(line) for line in
            (Path(results["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    return [r["train/cn_on"] for r in rows if "train/cn_on" in r]


def test_crossdomain_mixstyle_trains_on_two_balanced_domains(make_cfg):
    results = run(make_cfg(*DG, "style=mixstyle", "style.mix=crossdomain", "style.p=1.0",
                           "dataset.source_domains=[photo,painting]", "epochs=2", tiny=False))
    assert results["style_units"] > 0 and results["method"] == "mixstyle"
    on = _cn_on(results)
    assert on and min(on) == 1.0  # the units act in every training forward


def test_crossnorm_acts_in_training_and_changes_the_model(make_cfg, tmp_path):
    plain = run(make_cfg(*DG, "epochs=2", "paths.output_dir=" + str(tmp_path / "a"),
                         tiny=False))
    cn = run(make_cfg(*DG, "epochs=2", "cn=on", "cn.prob=1.0",
                      "paths.output_dir=" + str(tmp_path / "b"), tiny=False))
    on = _cn_on(cn)
    assert on and min(on) == 1.0 and cn["cn_units"] > 0
    assert cn["train/final_epoch_loss"] != plain["train/final_epoch_loss"]


def test_the_generated_set_is_written_once_atomically(tmp_path):
    root = write_domain_folder(tmp_path / "g", per_class=2, size=8)
    stamp = (root / "photo" / "circle" / "0000.png").stat().st_mtime_ns
    assert write_domain_folder(tmp_path / "g", per_class=2, size=8) == root
    assert (root / "photo" / "circle" / "0000.png").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.partial"))
    assert scan_domains(root).count("sketch") == 8


# ----------------------------------------------------------------------------- protocols

def test_domainbed_hparams_are_its_defaults_and_random_draws():
    assert [domainbed_hparam(k, 0, 5) for k in ("lr", "weight_decay", "batch_size",
                                                "resnet_dropout")] == [5e-5, 0.0, 32, 0.0]
    draws = [(domainbed_hparam("lr", hp, 0), domainbed_hparam("batch_size", hp, 0),
              domainbed_hparam("resnet_dropout", hp, 0)) for hp in range(1, 200)]
    lrs, batches, drops = zip(*draws, strict=True)
    assert 1e-5 <= min(lrs) and max(lrs) <= 10 ** -3.5
    assert 8 <= min(batches) and max(batches) <= 45 and set(drops) == {0.0, 0.1, 0.5}
    # DomainBed _hparam: RandomState(seed_hash(seed_hash(hparams_seed, trial_seed), name))
    r = np.random.RandomState(seed_hash(seed_hash(7, 2), "lr"))
    assert domainbed_hparam("lr", 7, 2) == 10 ** r.uniform(-5, -3.5)
    with pytest.raises(ConfigError, match="unknown DomainBed"):
        domainbed_hparam("momentum", 1, 0)


def test_the_protocols_compose_as_published(make_cfg):
    dassl = make_cfg("protocol=dassl", "dataset=pacs", "dataset.test_domain=sketch", tiny=False)
    assert (dassl.backbone.arch, dassl.backbone.weights, dassl.batch_size, dassl.epochs) == \
        ("resnet18", "IMAGENET1K_V1", 64, 50)
    assert (dassl.optimizer.name, dassl.optimizer.lr, dassl.optimizer.weight_decay,
            dassl.schedule.name, dassl.task.sampling, dassl.task.test_split) == \
        ("sgd", 1e-3, 5e-4, "cosine", "random", "all")
    db = make_cfg("protocol=domainbed", "dataset=office_home", "dataset.test_domain=Art",
                  tiny=False)
    assert (db.backbone.arch, db.task.freeze_bn, db.optimizer.name, db.optimizer.lr,
            db.batch_size, db.max_steps, db.task.holdout, db.task.sampling) == \
        ("resnet50", True, "adam", 5e-5, 32, 5001, 0.2, "balanced")
    hp = make_cfg("protocol=domainbed", "dataset=pacs", "task.hparams_seed=3", "seed=2",
                  tiny=False)
    assert hp.optimizer.lr == domainbed_hparam("lr", 3, 2)


def test_stage_output_puts_one_unit_after_each_chosen_torchvision_stage():
    from snc.models import attach
    from snc.ops import MixStyleOptions

    model = attach(torchvision.models.resnet18(num_classes=3), cn=MixStyleOptions(p=1.0),
                   position="stage_output", blocks=[1, 2, 3])
    assert sorted(model.snc_attach.units) == [f"layer{k}.1.snc_stage_output" for k in (1, 2, 3)]
    captured = {}
    model.layer3.register_forward_hook(lambda m, a, out: captured.setdefault("l3", out))
    model.train()
    with model.cn_controller.step():
        model(torch.randn(4, 3, 64, 64))
    assert captured["l3"].shape == (4, 256, 4, 4)


# ----------------------------------------------------------------------------- selection

def _record(step, accs):
    """accs: {domain: (in, out)}"""
    return {"step": step, "domains": {d: {"in": i, "out": o, "all": (4 * i + o) / 5,
                                          "n_in": 4, "n_out": 1} for d, (i, o) in accs.items()}}


def _run(held_out, hp, trial, history, domains=("A", "B", "C"), method="erm"):
    sources = [d for d in domains if d not in held_out]
    return {"dataset": "toy", "backbone": "rn", "method": method,
            "dg": {"test_domain": held_out[0], "held_out": list(held_out),
                   "source_domains": sources, "domains": list(domains), "test_split": "in",
                   "sampling": "balanced", "hparams_seed": hp, "trial_seed": trial,
                   "history": history}}


def test_each_rule_picks_what_domainbed_picks():
    # test domain A; sources B, C. hp 0 and hp 1, two evaluations each.
    runs = [
        _run(["A"], 0, 0, [_record(1, {"A": (50, 90), "B": (0, 70), "C": (0, 70)}),
                           _record(2, {"A": (60, 10), "B": (0, 60), "C": (0, 60)})]),
        _run(["A"], 1, 0, [_record(1, {"A": (70, 20), "B": (0, 80), "C": (0, 60)}),
                           _record(2, {"A": (40, 30), "B": (0, 50), "C": (0, 50)})]),
        # leave-one-domain-out helpers: hold out A and B (val B) / A and C (val C)
        _run(["A", "B"], 0, 0, [_record(1, {"A": (0, 0), "B": (10, 0), "C": (0, 0)}),
                                _record(2, {"A": (0, 0), "B": (90, 0), "C": (0, 0)})]),
        _run(["A", "C"], 0, 0, [_record(1, {"A": (0, 0), "B": (0, 0), "C": (20, 0)}),
                                _record(2, {"A": (0, 0), "B": (0, 0), "C": (80, 0)})]),
    ]
    # training-domain: best mean out of B, C over (hp, step): hp1 step1 (70) vs hp0 step1 (70):
    # equal scores -> the first in DomainBed's order (hp 0)
    assert selection.select(runs, "A", 0, "training_domain").test == 50
    runs[1]["dg"]["history"][0]["domains"]["C"]["out"] = 61  # hp1 step1: 70.5
    assert selection.select(runs, "A", 0, "training_domain").test == 70
    # oracle: last step per hp, by the test domain's out split: hp0 10, hp1 30 -> hp1's 40
    assert selection.select(runs, "A", 0, "oracle").test == 40
    # last: the default hyper-parameters' last step
    assert selection.select(runs, "A", 0, "last").test == 60
    # lodo: hp 0 only has helpers; step 2 has mean(90, 80) > step 1's -> hp0 step 2
    choice = selection.select(runs, "A", 0, "lodo")
    assert (choice.test, choice.hparams_seed, choice.step, choice.val) == (60, 0, 2, 85)
    assert selection.select(runs[:2], "A", 0, "lodo") is None  # no helper runs
    assert selection.select(runs, "B", 0, "training_domain") is None  # no run tests on B


def test_the_tables_give_seeds_domains_and_the_published_rows():
    runs = []
    for trial, (a, b) in enumerate([(50.0, 70.0), (60.0, 80.0)]):
        runs.append(_run(["A"], 0, trial, [_record(1, {"A": (a, 0), "B": (0, 50)})], ("A", "B")))
        runs.append(_run(["B"], 0, trial, [_record(1, {"A": (0, 50), "B": (b, 0)})], ("A", "B")))
    domains, rows = selection.domain_table(runs, "last")
    cells = rows[("toy", "rn", "erm", "balanced/in")]
    assert domains == ["A", "B"]
    assert cells["A"].values == [50, 60] and cells["average"].values == [60, 70]
    assert cells["average"].std == pytest.approx(np.std([60, 70], ddof=1))
    low, high = cells["A"].interval()
    from scipy import stats
    half = stats.t.ppf(0.975, 1) * np.std([50, 60], ddof=1) / np.sqrt(2)
    assert (low, high) == pytest.approx((55 - half, 55 + half))
    text = selection.markdown(runs)
    # a domain no run tested on leaves the average empty: it needs every domain of a seed
    three = [dict(r, dg=dict(r["dg"], domains=["A", "B", "C"])) for r in runs]
    assert selection.domain_table(three, "last")[1][("toy", "rn", "erm", "balanced/in")][
        "average"].values == []
    assert "last step of the default hyper-parameters" in text and "55.0 ± 7.1" in text
    pacs = selection.published_rows("pacs", "dassl")
    erm = next(r for r in pacs if r["row"] == "ERM")
    assert [erm["values"][d] for d in ("art_painting", "cartoon", "photo", "sketch",
                                       "average")] == [77.0, 75.9, 96.0, 69.2, 79.5]
    assert erm["rule"] == "last"
    db = {r["row"]: r for r in selection.published_rows("pacs", "domainbed")}
    assert db["ERM"]["values"]["average"] == 85.5 and db["ERM"]["rule"] == "training_domain"


def test_the_report_has_the_dg_tables(make_cfg, tmp_path):
    results = run(make_cfg(*DG, "epochs=1", tiny=False))
    from snc.cli.report import main as report_main

    out = tmp_path / "report"
    assert report_main([str(Path(results["run_dir"]).parent), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Domain generalization" in text and "training-domain validation" in text
    assert json.loads((Path(results["run_dir"]) / "results.json").read_text())["dg"]["history"]


# ----------------------------------------------------------------------------- registered sets

@pytest.mark.parametrize("name", ["pacs", "office_home", "vlcs", "terra_incognita", "domain_net"])
def test_each_dataset_config_matches_its_registry_entry(make_cfg, name):
    from snc.data.dg_sources import DOMAIN_SETS

    spec = DOMAIN_SETS[name]
    cfg = make_cfg(f"dataset={name}", tiny=False)
    assert tuple(cfg.dataset.domains) == spec.domains
    assert cfg.dataset.num_classes == len(spec.classes)


def test_a_registered_set_in_its_layout_trains_and_a_missing_one_names_the_download(make_cfg,
                                                                                     tmp_path):
    from snc.data.dg_sources import DOMAIN_SETS, dataset_root
    from snc.engine.runner import validate

    base = [o for o in DG if not o.startswith("dataset")] + ["dataset=pacs",
                                                             "dataset.image_size=16"]
    with pytest.raises(ConfigError, match="download_dg.py pacs"):
        run(make_cfg(*base, "dataset.test_domain=sketch", tiny=False))
    assert not (tmp_path / "outputs").exists()
    spec = DOMAIN_SETS["pacs"]
    root = dataset_root("pacs", tmp_path / "data")
    # the published layout: <domain>/<class>/<image>, two images per class
    write_domain_folder(root, per_class=2, size=20, domains=spec.domains, classes=spec.classes)
    with pytest.raises(ConfigError, match="has the domains art_painting, cartoon, photo, sketch"):
        validate(make_cfg(*base, "dataset.test_domain=Sketch", tiny=False))
    results = run(make_cfg(*base, "dataset.test_domain=sketch", "epochs=1", tiny=False))
    assert results["dg"]["source_domains"] == ["art_painting", "cartoon", "photo"]
    assert results["dg"]["history"][-1]["domains"]["sketch"]["n_in"] == 12  # 14 - int(14 * 0.2)


# ----------------------------------------------------------------------------- presets, sweeps

DG_PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" /
                                     "experiment").glob("dg_*.yaml") if p.stem != "dg_demo")


def test_the_presets_cover_both_protocols_every_dataset_and_method():
    methods = ("erm", "sn", "cn", "sncn", "mixstyle", "dsu", "efdmix", "padain")
    want = {f"dg_dassl_{d}_{m}" for d in ("pacs", "office_home") for m in methods}
    want |= {f"dg_domainbed_{d}_{m}" for d in ("pacs", "office_home", "vlcs",
                                                "terra_incognita", "domain_net")
             for m in methods}
    assert set(DG_PRESETS) == want


@pytest.mark.parametrize("name", [p for p in DG_PRESETS if "_pacs_" in p])
def test_each_pacs_preset_builds_its_method_where_its_paper_puts_it(make_cfg, name):
    from snc.tasks.dg import DomainGeneralization

    cfg = make_cfg(f"experiment={name}", tiny=False)
    # the weights are checked (and read) when the model is built: offline here
    task = DomainGeneralization(make_cfg(f"experiment={name}", "backbone.weights=null",
                                         tiny=False))
    with torch.device("meta"):
        model = task.build_model(pretrained=False)
    sites = model.snc_attach.units
    method = name.rsplit("_", 1)[1]
    arch = "resnet18" if "_dassl_" in name else "resnet50"
    assert cfg.backbone.arch == arch and cfg.backbone.weights == "IMAGENET1K_V1"
    if method in ("mixstyle", "efdmix"):
        assert sorted(sites) == [f"layer{k}.{1 if arch == 'resnet18' else n}.snc_stage_output"
                                 for k, n in ((1, 2), (2, 3), (3, 5))]
    elif method == "dsu":
        assert len(sites) == 4 and all(s.endswith("snc_stage_output") for s in sites)
    elif method in ("cn", "sncn"):
        assert sites[""] == "image" and cfg.cn.prob == 0.5
    elif method == "erm":
        assert not sites
    if method in ("sn", "sncn"):
        assert sum(p == "post_addition" for p in sites.values()) == (8 if arch == "resnet18"
                                                                     else 16)


def test_the_sweeps_list_the_datasets_domains(make_cfg):
    from omegaconf import open_dict

    cfg = make_cfg("dataset=office_home", tiny=False)
    with open_dict(cfg):
        cfg.swept = "${snc_domains:}"
    assert cfg.swept == "Art,Clipart,Product,Real World"
    for name in ("dg_domains", "dg_hparams", "dg_lodo"):
        text = (Path(__file__).resolve().parents[1] / "configs" / "sweep" /
                f"{name}.yaml").read_text()
        assert "dataset.test_domain: ${snc_domains:}" in text
    plain = make_cfg(tiny=False)
    with open_dict(plain):
        plain.swept = "${snc_domains:}"
    with pytest.raises(Exception, match="name the dataset on the command line"):
        _ = plain.swept


def test_a_validation_domain_is_held_out_too(make_cfg):
    from snc.tasks.dg import domain_options

    cfg = make_cfg(*DG, "dataset.val_domain=photo", tiny=False)
    assert domain_options(cfg) == (("photo", "painting", "sketch", "noise"), "sketch",
                                   ("painting", "noise"))
    same = make_cfg(*DG, "dataset.val_domain=sketch", tiny=False)
    assert domain_options(same)[2] == ("photo", "painting", "noise")
    with pytest.raises(ConfigError, match="choose one of them"):
        domain_options(make_cfg(*DG, "dataset.val_domain=moon", tiny=False))


def test_missing_pretrained_weights_name_the_file_and_the_cache(make_cfg, tmp_path, monkeypatch):
    from snc.engine.runner import validate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(
        OSError("offline")))
    with pytest.raises(ConfigError, match=r"resnet50-0676ba61.pth in .*torch/hub/checkpoints"):
        validate(make_cfg("experiment=dg_domainbed_pacs_erm", tiny=False))


def test_color_jitter_applies_each_images_draws_in_its_drawn_order():
    from snc.data.dg import color_jitter

    x = torch.rand(6, 3, 7, 7)
    out = color_jitter(x, 0.3, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, in color_jitter's order
    factors = 0.7 + 0.6 * torch.rand(6, 3, generator=g)
    hue = (2 * torch.rand(6, generator=g) - 1) * 0.3
    order = torch.argsort(torch.rand(6, 4, generator=g), dim=1)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(6):
        img = x[i]
        for op in order[i].tolist():
            f = hue[i].item() if op == 3 else factors[i, op].item()
            img = fns[op](img, f)
        assert torch.allclose(out[i], img, atol=1e-4), i


@pytest.mark.parametrize("sampling", ["balanced", "random"])
def test_indexed_batches_equal_batches_of_the_gathered_images(sampling):
    images, labels = _domain_images([0, 255], 12)
    images = [x + torch.arange(12, dtype=torch.uint8)[:, None, None, None] for x in images]
    keep = [torch.tensor([1, 4, 5, 9, 11]), torch.tensor([0, 2, 3, 7])]
    opts = CropOptions(size=8)
    a = DomainBatches(images, labels, sampling, 3, opts, (0, 0, 0), (1, 1, 1), "cpu", 2,
                      endless=True, indices=keep)
    b = DomainBatches([x[k] for x, k in zip(images, keep, strict=True)],
                      [y[k] for y, k in zip(labels, keep, strict=True)], sampling, 3, opts,
                      (0, 0, 0), (1, 1, 1), "cpu", 2, endless=True)
    assert len(a) == len(b)
    for _ in range(4):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
