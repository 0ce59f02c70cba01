"""Segmentation (paper Table 3): data layouts and errors, transforms, loader resume, FCN model and
parameter counts, metrics and protocols, and the segment task end to end on generated scenes.

Everything runs on CPU in seconds: tiny generated images, crops of 33-65 px, backbone width 4-8;
the full-size model is only built on the ``meta`` device (parameter counts).
"""

import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import snc.config  # noqa: F401  (registers the config schemas)
import snc.tasks.segment  # noqa: F401  (registers task=segment)
from snc.data.segmentation import labels as L
from snc.data.segmentation.base import PairDataset, SegmentationDataError, read_image, read_label
from snc.data.segmentation.cityscapes import cityscapes_split
from snc.data.segmentation.generated import GeneratedSpec, write_generated
from snc.data.segmentation.gta5 import gta5_split, read_split
from snc.data.segmentation.loader import SegmentationLoader
from snc.data.segmentation.transforms import CenterCrop, TrainTransform, mean_fill, normalize
from snc.errors import ConfigError
from snc.eval.segmentation import (
    confusion_matrix,
    metric_dict,
    predict_full,
    scores,
    sliding_window_probs,
    window_starts,
)
from snc.models import count_parameters, count_units
from snc.models.segmentation import build_fcn, init_backbone
from snc.tasks import RunContext, get_task

SPEC = GeneratedSpec(seed=3, source_size=(40, 72), target_size=(36, 68), source_train=16,
                     source_val=4, source_test=2, target_train=2, target_val=4)
TINY = ["task=segment", "dataset=generated", "backbone=resnet50", "+backbone.init=none",
        "+backbone.overrides.width=4", "task.crop=33", "batch_size=4", "task.eval.batch_size=4",
        "task.eval.window_batch=8", "task.eval.save_predictions=2", "seed=1"]


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    return write_generated(tmp_path_factory.mktemp("streets"), SPEC)


def _data_overrides(root: Path):
    return [f"dataset.root={root / 'gta5'}", f"dataset.target.root={root / 'cityscapes'}",
            "~dataset.generate"]


@pytest.fixture
def seg_cfg(make_cfg, generated):
    def make(*overrides, root=None):
        return make_cfg(*TINY, *_data_overrides(root or generated), *overrides, tiny=False)
    return make


def _task(cfg, run_dir):
    task = get_task("segment")(cfg)
    task.setup(RunContext(device=torch.device("cpu"), run_dir=Path(run_dir), seed=int(cfg.seed)))
    return task


# ----- label table -----------------------------------------------------------------------------

def test_label_table_maps_the_19_classes_and_ignores_the_rest():
    assert len(L.CLASSES) == L.NUM_CLASSES == 19
    assert [c.train_id for c in L.CLASSES] == list(range(19))
    ids = np.arange(34, dtype=np.uint8)[None]
    mapped = L.to_train_ids(ids)[0]
    for c in L.CLASSES:
        assert mapped[c.label_id] == c.train_id
    assert sorted(int(i) for i in np.where(mapped == 255)[0]) == list(L.IGNORED_LABEL_IDS)
    with pytest.raises(ValueError, match=r"lab\.png holds values \[34, 200\]"):
        L.to_train_ids(np.array([[7, 34, 200]], np.uint8), source="lab.png")
    assert tuple(L.colorize(np.array([[13]]))[0, 0]) == (0, 0, 142)


def test_label_table_equals_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    theirs = {lab.trainId: (lab.name, lab.id, tuple(lab.color))
              for lab in labels.labels if 0 <= lab.trainId < 255 and lab.id >= 0}
    ours = {c.train_id: (c.name, c.label_id, c.color) for c in L.CLASSES}
    assert ours == theirs
    ignored = sorted(lab.id for lab in labels.labels if lab.trainId in (255, -1) and lab.id >= 0)
    assert ignored == list(L.IGNORED_LABEL_IDS)


# ----- files, layouts and bad input ------------------------------------------------------------

def test_generated_layouts_read_back(generated):
    train = gta5_split(generated / "gta5", "train")
    assert len(train) == SPEC.source_train and train[0].name == "00001"
    image, label = PairDataset(train)[0]
    assert image.shape == (*SPEC.source_size, 3) and image.dtype == np.uint8
    assert label.shape == SPEC.source_size
    assert set(np.unique(label)) <= set(range(19)) | {255}
    val = cityscapes_split(generated / "cityscapes", "val")
    assert len(val) == SPEC.target_val and val[0].name.startswith("frankfurt/frankfurt_")
    assert PairDataset(val)[0][1].shape == SPEC.target_size


def test_missing_datasets_and_split_file_name_the_layout(tmp_path, generated):
    with pytest.raises(SegmentationDataError, match="registration needed"):
        read_split(tmp_path / "nowhere", "train")
    with pytest.raises(SegmentationDataError, match="registration needed"):
        cityscapes_split(tmp_path / "nowhere", "val")
    copy = tmp_path / "gta5"
    shutil.copytree(generated / "gta5", copy)
    (copy / "split.mat").unlink()
    with pytest.raises(SegmentationDataError, match=r"split\.mat is missing"):
        read_split(copy, "train")


def test_bad_label_values_and_truncated_png_name_the_file(tmp_path):
    bad = tmp_path / "bad_label.png"
    Image.fromarray(np.full((4, 4), 40, np.uint8), mode="L").save(bad)
    with pytest.raises(SegmentationDataError, match=r"bad_label\.png holds values \[40\]"):
        read_label(bad)
    good = tmp_path / "img.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(good)
    cut = tmp_path / "truncated.png"
    cut.write_bytes(good.read_bytes()[:60])
    with pytest.raises(SegmentationDataError, match=r"truncated\.png"):
        read_image(cut)
    with pytest.raises(SegmentationDataError, match=r"truncated\.png"):
        read_label(cut)


def test_size_mismatch_is_reported_and_dropped_or_refused(seg_cfg, generated, tmp_path):
    root = tmp_path / "streets"
    shutil.copytree(generated, root)
    Image.open(root / "gta5" / "images" / "00002.png").resize((50, 30)).save(
        root / "gta5" / "images" / "00002.png")
    (root / "gta5" / "labels" / "00005.png").unlink()
    task = _task(seg_cfg(root=root), tmp_path / "run")
    assert task.info["source_dropped"] == ["00005", "00002"]
    assert task.info["source_train"] == SPEC.source_train - 2
    assert "00002" in (tmp_path / "run" / "dropped_pairs.txt").read_text()
    with pytest.raises(SegmentationDataError, match=r"00002 \(image 50x30, label 72x40\)"):
        _task(seg_cfg("dataset.mismatch=error", root=root), tmp_path / "run2")
    # without the start-up check, loading the pair refuses it instead of cropping
    ds = PairDataset(gta5_split(root / "gta5", "train", ["00002"]))
    with pytest.raises(SegmentationDataError, match="50x30 but its label"):
        ds[0]


def test_seeded_quarter_subset_is_written_to_the_run_dir(seg_cfg, tmp_path):
    a = _task(seg_cfg("dataset.subset=0.25", "dataset.subset_seed=5"), tmp_path / "a")
    b = _task(seg_cfg("dataset.subset=0.25", "dataset.subset_seed=5"), tmp_path / "b")
    c = _task(seg_cfg("dataset.subset=0.25", "dataset.subset_seed=6"), tmp_path / "c")
    names = [ln for ln in (tmp_path / "a" / "train_list.txt").read_text().splitlines()
             if not ln.startswith("#")]
    assert len(names) == 4 == a.info["source_train"]
    assert names == [p.name for p in a.train.dataset.pairs]
    assert a.info["train_list_sha1"] == b.info["train_list_sha1"] != c.info["train_list_sha1"]


# ----- transforms and loader -------------------------------------------------------------------

def _blocky(h=40, w=60):
    label = np.zeros((h, w), np.uint8)
    label[:, w // 2:] = 1
    label[h // 2:, :] = 2
    image = np.stack([label * 100, 255 - label * 100, np.full_like(label, 30)], -1)
    return image.astype(np.uint8), label


def test_paired_transform_keeps_image_and_mask_aligned():
    image, label = _blocky()
    t = TrainTransform(crop=33, rotate=10, rotate_p=1.0, blur_p=0.0)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        img, mask = t(image, label, g)
        assert img.shape == (3, 33, 33) and img.dtype == torch.uint8 and mask.shape == (33, 33)
        valid = mask != 255
        # the colour encodes the class: where a label survives, the pixel carries its colour
        agree = (img[0][valid].long() - mask[valid] * 100).abs() < 30
        assert agree.float().mean() > 0.9
        again, mask2 = t(image, label, torch.Generator().manual_seed(seed))
        assert torch.equal(again, img) and torch.equal(mask2, mask)


def test_padding_fills_mean_and_ignore_or_refuses_a_too_large_crop():
    image, label = _blocky(20, 24)
    img, mask = CenterCrop(crop=33)(image, label)
    assert tuple(img[:, 0, 0].tolist()) == mean_fill() and mask[0, 0] == 255
    assert (mask != 255).sum() == 20 * 24
    with pytest.raises(SegmentationDataError, match="crop 33 is larger than frame.png"):
        CenterCrop(crop=33, pad=False)(image, label, name="frame.png")
    t = TrainTransform(crop=33, scale=(1.0, 1.0), pad=False)
    with pytest.raises(SegmentationDataError, match="frame.png"):
        t(image, label, torch.Generator().manual_seed(0), name="frame.png")


def test_loader_resumes_mid_epoch_exactly_and_ignores_worker_count(generated):
    ds = PairDataset(gta5_split(generated / "gta5", "train"))
    t = TrainTransform(crop=33)
    ref = SegmentationLoader(ds, t, batch_size=4, seed=2)
    assert len(ref) == 4
    it = iter(ref)
    first = [next(it) for _ in range(2)]
    state = ref.state_dict()
    rest = list(it) + list(ref)  # the end of epoch 0 and all of epoch 1
    resumed = SegmentationLoader(ds, t, batch_size=4, seed=2)
    resumed.load_state_dict(state)
    again = list(resumed) + list(resumed)
    assert len(again) == len(rest) == 6
    for (a, b), (c, d) in zip(rest, again, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    workers = SegmentationLoader(ds, t, batch_size=4, seed=2, workers=2)
    for (a, b), (c, d) in zip(first, list(workers)[:2], strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert not torch.equal(first[0][0], rest[2][0])  # epochs differ


def _both_paths(t, pairs, seeds):
    from snc.data.segmentation.device_transforms import RawSample, collate_raw, warp_batch

    cpu = [t(img, lab, torch.Generator().manual_seed(s))
           for (img, lab), s in zip(pairs, seeds, strict=True)]
    raw = [RawSample(t)(img, lab, torch.Generator().manual_seed(s))
           for (img, lab), s in zip(pairs, seeds, strict=True)]
    images, labels = warp_batch(collate_raw(raw, fill=mean_fill()), t, torch.device("cpu"))
    return torch.stack([c[0] for c in cpu]), torch.stack([c[1] for c in cpu]), images, labels


def test_device_warp_equals_the_cpu_transform_without_resampling():
    # scale 1, no rotation or blur: flip, padding and crop are exact on both paths
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
              rng.integers(0, 19, (h, w), dtype=np.uint8)) for h, w in ((40, 60), (20, 50))]
    t = TrainTransform(crop=33, scale=(1.0, 1.0), rotate=0, blur_p=0)
    ci, cl, di, dl = _both_paths(t, pairs, seeds=[3, 4])
    assert torch.equal(cl, dl)
    assert torch.equal(ci.float(), di)


def test_device_warp_agrees_with_the_cpu_transform_under_scale_and_rotation():
    image, label = _blocky(48, 64)
    t = TrainTransform(crop=33, rotate=10, rotate_p=1.0, blur_p=0.5)
    ci, cl, di, dl = _both_paths(t, [(image, label)] * 6, seeds=list(range(6)))
    # nearest-neighbour edges may differ by a pixel (a wrong rotation sign scores ~0.94)
    assert (cl == dl).float().mean() > 0.98
    valid = dl != 255
    assert ((di[:, 0][valid] - dl[valid] * 100).abs() < 30).float().mean() > 0.9


# ----- model -----------------------------------------------------------------------------------

def test_fcn_parameter_counts_match_the_reference():
    with torch.device("meta"):
        plain = build_fcn(19)
        sn = build_fcn(19, sn=True, sn_position="post_residual")
        sncn = build_fcn(19, sn=True, cn=True, sn_position="post_residual",
                         cn_position="post_addition", crop="style", active_num=1, prob=0.5)
        ibn = build_fcn(19, ibn="a")
        ibn_b = build_fcn(19, ibn="b")
    assert count_parameters(plain) == 35_320_678
    assert count_parameters(plain.classifier) == 9_447_955
    assert count_parameters(plain.aux_classifier) == 2_364_691
    assert count_parameters(sn) - count_parameters(plain) == 60_416
    assert count_parameters(sncn) == count_parameters(sn)
    assert count_units(sncn) == {"sn": 16, "cn": 16, "se": 0}
    assert len(sncn.cn_controller) == 16 and sncn.cn_controller.active_num == 1
    assert count_parameters(ibn) == count_parameters(plain)  # IN and BN halves: same count
    # IBN-b: affine InstanceNorms after the additions closing layer1 and layer2 (256 + 512 ch)
    assert count_parameters(ibn_b) == count_parameters(plain) + 1_536
    assert type(ibn.backbone.layer1[0].bn1).__name__ == "IBN"
    assert len(plain.cn_controller) == 0


def test_dilated_backbone_equals_torchvision_and_plain_resnet_is_unchanged():
    torchvision = pytest.importorskip("torchvision")
    from snc.models import build_model

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    ours = build_model("resnet50", 1000, replace_stride_with_dilation=(False, True, True)).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    plain = build_model("resnet50", 1000).eval()
    plain.load_state_dict(tv.state_dict(), strict=True)
    tv_plain = torchvision.models.resnet50().eval()
    tv_plain.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)
        assert torch.allclose(plain(x), tv_plain(x), atol=1e-5)
        feats = ours.forward_features(x)
    assert feats["layer1"].shape[-1] == 9 and feats["layer4"].shape[-1] == 5  # stride 4 / 8


@pytest.mark.parametrize("position", ["identity", "pre_residual", "post_residual",
                                      "post_addition", "image"])
def test_fcn_forward_with_units_at_any_position(position):
    torch.manual_seed(0)
    model = build_fcn(19, width=4, sn=position != "image", cn=True, position=position,
                      crop="style" if position != "image" else "neither")
    x = torch.randn(2, 3, 33, 33)
    with model.cn_controller.activate():
        out = model(x)
    assert out["out"].shape == out["aux"].shape == (2, 19, 33, 33)
    out["out"].mean().backward()
    model.eval()
    assert set(model(x)) == {"out"} and torch.isfinite(model(x)["out"]).all()


def test_offline_imagenet_init_names_the_file_and_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model = build_fcn(19, width=4)
    with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61\.pth.*torch/hub/checkpoints"):
        init_backbone(model, "imagenet")


def test_init_from_snc_checkpoint_reports_missing_and_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    source = build_fcn(19, width=4)  # an snc FCN run: keys carry the backbone. prefix
    (tmp_path / "ckpt").mkdir()
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt" / "last.pt")
    target = build_fcn(19, width=4, sn=True, sn_position="post_residual")
    report = init_backbone(target, str(tmp_path))
    assert report["missing"] and all(".post_residual.sn." in k for k in report["missing"])
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)
    # a torchvision-style ResNet file: its fc is unexpected
    from snc.models import build_model

    plain = build_model("resnet50", 1000, width=4).state_dict()
    torch.save(plain, tmp_path / "resnet.pt")
    report = init_backbone(build_fcn(19, width=4), str(tmp_path / "resnet.pt"))
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"] and not report["missing"]
    torch.save({"conv1.weight": plain["conv1.weight"]}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="not a ResNet-50"):
        init_backbone(build_fcn(19, width=4), str(tmp_path / "partial.pt"))


# ----- metrics and protocols -------------------------------------------------------------------

def test_perfect_prediction_scores_100_and_ignore_is_skipped():
    target = torch.randint(0, 19, (2, 8, 19))
    target[1, 0] = torch.arange(19)  # every class present
    target[0, :4] = 255
    pred = target.clone()
    pred[target == 255] = 3  # predictions on ignored pixels do not count
    s = scores(confusion_matrix(pred, target))
    assert s["miou"] == pytest.approx(100) and s["acc"] == pytest.approx(100)
    assert s["macc"] == pytest.approx(100)


def test_miou_of_a_known_confusion_matrix():
    cm = torch.zeros(19, 19, dtype=torch.long)
    cm[0, 0], cm[0, 1], cm[1, 1], cm[1, 0], cm[2, 2] = 6, 2, 3, 1, 4
    s = scores(cm)
    iou0, iou1, iou2 = 6 / (8 + 7 - 6), 3 / (4 + 5 - 3), 4 / 4
    assert s["iou"][:3] == pytest.approx([100 * iou0, 100 * iou1, 100 * iou2])
    assert s["miou"] == pytest.approx(100 * (iou0 + iou1 + iou2) / 19)  # 16 absent classes = 0
    assert s["macc"] == pytest.approx(100 * (6 / 8 + 3 / 4 + 1) / 19)
    assert s["acc"] == pytest.approx(100 * 13 / 16)
    m = metric_dict(cm, "target", "_center")
    assert m["target/miou_center"] == pytest.approx(s["miou"])
    assert m["target/iou_center/traffic_light"] == 0.0
    # counting from pixels builds that matrix
    gt = torch.tensor([0] * 8 + [1] * 4 + [2] * 4 + [255] * 3)
    pr = torch.tensor([0] * 6 + [1] * 2 + [1] * 3 + [0] + [2] * 4 + [5] * 3)
    counted = confusion_matrix(pr, gt)
    assert counted.shape == (19, 20) and torch.equal(counted[:, :19], cm)
    assert counted[:, 19].sum() == 0


def test_predictions_outside_the_classes_are_misses_not_the_last_class():
    """semseg's intersectionAndUnion: a saved prediction of 255 is a miss of its true class and
    a false positive of none (a clamp to the last class, 'bicycle', inflated its IoU)."""
    gt = torch.tensor([18] * 10 + [0] * 10)
    pr = torch.tensor([18] * 10 + [255] * 1 + [0] * 9)
    s = scores(confusion_matrix(pr, gt))
    assert s["iou"][18] == pytest.approx(100.0)  # no false positive for bicycle
    assert s["iou"][0] == pytest.approx(90.0)  # 9 / (10 + 9 - 9)
    assert s["acc"] == pytest.approx(95.0)
    # the same counts with a semseg-style histogram of the valid predictions
    inter = torch.bincount(pr[pr == gt], minlength=19).double()
    area_pred = torch.histc(pr.double(), bins=19, min=0, max=18)
    area_gt = torch.bincount(gt, minlength=19).double()
    present = area_gt > 0
    expected = (inter / (area_pred + area_gt - inter).clamp(min=1e-10))[present] * 100
    assert [s["iou"][i] for i in range(19) if present[i]] == pytest.approx(expected.tolist())


def test_window_grid_matches_semseg():
    assert window_starts(1024, 713, 476) == [0, 311]
    assert window_starts(2048, 713, 476) == [0, 476, 952, 1335]
    assert window_starts(713, 713, 476) == [0]


def test_sliding_window_equals_single_forward_when_the_window_covers_the_image():
    torch.manual_seed(0)
    model = build_fcn(19, width=4).eval()
    x = torch.randn(3, 33, 33)
    with torch.no_grad():
        single = model(x[None])["out"][0].softmax(0)
        flipped = model(x[None].flip(-1))["out"][0].softmax(0).flip(-1)
        assert torch.allclose(sliding_window_probs(model, x, 33, flip=False), single, atol=1e-6)
        assert torch.allclose(sliding_window_probs(model, x, 33, flip=True),
                              (single + flipped) / 2, atol=1e-6)
        # a wider image: several windows, every pixel covered, probabilities sum to 1
        wide = torch.randn(3, 33, 80)
        p = sliding_window_probs(model, wide, 33, flip=True)
        assert p.shape == (19, 33, 80) and torch.allclose(p.sum(0), torch.ones(33, 80), atol=1e-5)
        assert predict_full(model, wide, 33, base_size=40).shape == (33, 80)


def test_sharded_evaluation_sums_to_the_single_process_counts(generated):
    from snc.data.segmentation.transforms import full_image
    from snc.eval.segmentation import evaluate_segmentation

    torch.manual_seed(0)
    model = build_fcn(19, width=4).eval()
    ds = PairDataset(cityscapes_split(generated / "cityscapes", "val"))
    cpu = torch.device("cpu")

    def cm_of(rank, world, protocol):
        transform = CenterCrop(33) if protocol == "center" else full_image
        batches = SegmentationLoader(ds, transform, 3 if protocol == "center" else 1,
                                     train=False, rank=rank, world=world)
        return evaluate_segmentation(model, batches, protocol, normalize, cpu, crop=33)

    for protocol in ("center", "sliding"):
        whole, info = cm_of(0, 1, protocol)
        parts = [cm_of(r, 3, protocol) for r in range(3)]
        assert torch.equal(sum(p[0] for p in parts), whole)
        assert sum(p[1]["images"] for p in parts) == info["images"] == len(ds)
        pixels = SPEC.target_size[0] * SPEC.target_size[1] if protocol == "sliding" else 33 * 33
        assert whole.sum() <= len(ds) * pixels


# ----- the task --------------------------------------------------------------------------------

def test_task_validates_options(seg_cfg):
    cls = get_task("segment")
    with pytest.raises(ConfigError, match="backbone=resnet50"):
        cls(seg_cfg("backbone=wrn40_2"))
    with pytest.raises(ConfigError, match="task.monitor"):
        cls(seg_cfg("task.monitor=val"))
    with pytest.raises(ConfigError, match="ResNet position"):
        cls(seg_cfg('sn="on"', "position=after_conv"))
    with pytest.raises(ConfigError, match="no such file"):
        cls(seg_cfg("backbone.init=/does/not/exist.pt"))
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        cls(seg_cfg("backbone.init=imagenet"))
    task = cls(seg_cfg('sn="on"', 'cn="on"', "crop=style", "position=post_addition",
                       "position.sn=post_residual"))
    assert task.method() == "sncn" and task.monitor == ("source/miou_center", "max")
    assert task.run_name() == "generated2generated_target-fcn50-sncn-style-a1-p0.5"
    assert task.unit_placement().sn == "post_residual"
    assert task.unit_placement().cn == "post_addition"


def test_task_trains_evaluates_and_reports(seg_cfg, tmp_path):
    cfg = seg_cfg('sn="on"', 'cn="on"', "crop=style", "cn.prob=1.0")
    task = _task(cfg, tmp_path / "run")
    model = task.model
    assert count_units(model) == {"sn": 16, "cn": 16, "se": 0}
    groups = task.param_groups(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = torch.optim.SGD([{"params": g["params"], "lr": 0.01 * g["lr_scale"]} for g in groups],
                          momentum=0.9)
    batch = next(iter(task.train))
    model.train()
    losses = []
    for _ in range(8):
        loss, logs = task.training_step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert set(logs) == {"loss", "main_loss", "aux_loss", "cn"} and float(logs["cn"]) == 1.0
    assert losses[-1] < losses[0]
    metrics = task.evaluate(model)
    assert {"source/miou_center", "target/miou_center", "target/acc_center"} <= set(metrics)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    results = task.final_evaluate(model, best)
    for key in ("source/miou", "target/miou", "source/miou_center", "target/miou_center",
                "target/miou_best", "source/miou_center_best", "target/iou/sky", "source/macc",
                "target/acc", "target/iou_center/road", "source/iou_best/car"):
        assert 0.0 <= results[key] <= 100.0, key
    assert results["target/miou_best"] == pytest.approx(results["target/miou"])
    pngs = sorted((tmp_path / "run" / "predictions" / "target").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (3 * SPEC.target_size[1],
                                                           SPEC.target_size[0])
    assert "target mIoU" in task.summary(results)
    assert task.state_dict()["train_list_sha1"] == task.info["train_list_sha1"]
    with pytest.raises(ConfigError, match="another training list"):
        task.load_state_dict({"train_list_sha1": "0" * 40})


def test_task_trains_with_device_augmentation(seg_cfg, tmp_path):
    task = _task(seg_cfg("task.augment=device"), tmp_path / "run")
    batch = next(iter(task.train))
    assert isinstance(batch, dict) and batch["u"].shape == (4, 7)
    loss, logs = task.training_step(task.model, batch)
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"loss", "main_loss", "aux_loss", "cn"}


def test_engine_runs_the_task_end_to_end(seg_cfg, tmp_path):
    from snc.engine import run

    cfg = seg_cfg('sn="on"', 'cn="on"', "crop=style", "epochs=2", "eval_every=1",
                  "schedule.name=poly", "schedule.power=0.9", "optimizer.lr=0.01",
                  "optimizer.nesterov=false", "progress=false")
    results = run(cfg)
    run_dir = Path(results["run_dir"])
    assert (run_dir / "results.json").is_file() and (run_dir / "ckpt" / "best.pt").is_file()
    assert (run_dir / "train_list.txt").is_file()
    assert results["task"] == "segment" and results["best/step"] in (4, 8)
    assert 0 <= results["target/miou"] <= 100 and "target/miou_best" in results
    assert results["num_params"] == count_parameters(build_fcn(19, width=4, sn=True,
                                                               sn_position="post_residual"))


@pytest.mark.parametrize("preset", ["table3_baseline", "table3_ibn", "table3_sn", "table3_cn",
                                    "table3_sncn", "segment_demo"])
def test_presets_compose_and_validate(make_cfg, preset):
    cfg = make_cfg(f"experiment={preset}", tiny=False)
    task = get_task(cfg.task.name)(cfg)
    expected = {"table3_baseline": "basic", "table3_ibn": "ibn_a", "table3_sn": "sn",
                "table3_cn": "cn", "table3_sncn": "sncn", "segment_demo": "sncn"}[preset]
    assert task.method() == expected
    assert cfg.schedule.name == "poly" and cfg.schedule.power == 0.9
    if preset != "segment_demo":
        assert cfg.batch_size == 16 and cfg.epochs == 80 and cfg.optimizer.lr == 0.01
        assert cfg.dataset.subset == 0.25 and cfg.task.crop == 713
    place, cn = task.unit_placement(), task.units.cn
    if "sn" in expected:
        assert place.sn == "post_residual"
    if "cn" in expected:
        assert place.cn == "post_addition" and cn.crop == "style"
        assert cn.active_num == 1 and cn.prob == 0.5 and cn.mode == "two_instance"


@pytest.mark.parametrize("preset", ["table3_sncn", "table3_cn", "segment_demo"])
def test_presets_switch_units_off_from_the_command_line(make_cfg, preset):
    cfg = make_cfg(f"experiment={preset}", 'sn="off"', 'cn="off"', "crop=neither", tiny=False)
    assert get_task(cfg.task.name)(cfg).method() == "basic"


def test_normalize_matches_the_official_0_255_scale():
    x = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    assert torch.allclose(normalize(x), (x.float() - mean) / std, atol=1e-5)
