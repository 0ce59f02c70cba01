"""ImageNet scale: ResNet-50 (+IBN) counts, folder data + ImageNet-C with AlexNet-normalized
mCE, and multi-process (gloo) training whose evaluation equals the single-process one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snc.corruptions import CORRUPTIONS
from snc.eval.robustness import ALEXNET_ERRORS, count_errors
from snc.models import build_model, count_parameters, count_units

ROOT = Path(__file__).resolve().parents[1]
REF = json.loads((Path(__file__).parent / "data" / "official.json").read_text())
POSITION = {"pre": "pre_residual", "residual": "post_residual", "identity": "identity",
            "post": "post_addition"}
TINY_RESNET = ["backbone=resnet50", "+backbone.overrides.width=8",
               "+backbone.overrides.layers=[1,1,1,1]"]


def resnet_cases():
    cases = []
    for official, ibn in (("resnet50", "none"), ("resnet50_ibn_a", "a"), ("resnet50_ibn_b", "b")):
        for unit_type, positions in REF["param_counts"]["imagenet"][official].items():
            for pos, rec in positions.items():
                if "params" in rec and unit_type in ("none", "sn", "cnsn"):
                    cases.append((ibn, unit_type, pos, rec))
    return cases


@pytest.mark.parametrize("ibn, unit_type, pos, rec", resnet_cases(),
                         ids=lambda v: str(v) if not isinstance(v, dict) else "")
def test_resnet50_counts_equal_the_official_code(ibn, unit_type, pos, rec):
    kw = dict(sn="sn" in unit_type, cn="cn" in unit_type)
    if unit_type != "none":
        kw["position"] = POSITION[pos]
    model = build_model("resnet50", 1000, ibn=ibn, **kw)
    units = count_units(model)
    assert count_parameters(model) == rec["params"]
    assert (units["sn"], units["cn"]) == (rec["sn_units"], rec["cn_units"])


def test_plain_resnet50_is_torchvisions():
    import torchvision

    ours, theirs = build_model("resnet50", 1000), torchvision.models.resnet50()
    assert count_parameters(ours) == REF["extra_reference_counts"]["torchvision_resnet50"]
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same names: weights load as-is
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_ibn_variants_and_positions_run():
    for ibn in ("a", "b"):
        for position in ("identity", "pre_residual", "post_residual", "post_addition"):
            model = build_model("resnet50", 5, ibn=ibn, sn=True, cn=True, position=position,
                                prob=1.0, width=8, layers=[1, 1, 1, 1]).train()
            with model.cn_controller.step():
                out = model(torch.randn(4, 3, 64, 64))
            out.sum().backward()
            assert out.shape == (4, 5) and torch.isfinite(out).all()


def make_fake_imagenet(root: Path, classes=("n01440764", "n01443537", "n01484850"),
                       train_per_class=8, val_per_class=4, size=64):
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k, wnid in enumerate(classes):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                img = np.full((size, size + 8, 3), 40 + 80 * k, dtype=np.uint8)
                img = np.clip(img + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / wnid / f"{split}_{k}_{i}.JPEG")
    return classes


def make_fake_imagenet_c(val: Path, out: Path):
    for corruption in CORRUPTIONS:
        for s in range(1, 6):
            for wnid_dir in sorted(val.iterdir()):
                dest = out / corruption / str(s) / wnid_dir.name
                dest.mkdir(parents=True)
                for f in sorted(wnid_dir.iterdir()):
                    arr = np.asarray(Image.open(f)).astype(np.int16)
                    arr = np.clip(arr + (s * 12 if s % 2 else -s * 12), 0, 255).astype(np.uint8)
                    Image.fromarray(arr).save(dest / f.name, quality=85)


def test_tiny_imagenet_run_reports_alexnet_normalized_mce(make_cfg, tmp_path):
    data = tmp_path / "imagenet"
    make_fake_imagenet(data)
    make_fake_imagenet_c(data / "val", tmp_path / "ImageNet-C")
    cfg = make_cfg(*TINY_RESNET, "dataset=imagenet", f"dataset.root={data}",
                   f"dataset.corrupted_dir={tmp_path / 'ImageNet-C'}", "dataset.image_size=56",
                   "dataset.resize_size=64", "dataset.workers=0", "batch_size=8",
                   "eval_batch_size=6", "epochs=1", "sn=on", "cn=on", "position.cn=image",
                   "position.sn=post_addition", "ibn=b", tiny=False)
    cfg.progress = False
    assert cfg.schedule.name == "step" and cfg.optimizer.scale_lr_by_batch == 256
    from snc.engine import run

    results = run(cfg)
    assert results["dataset"] == "imagenet" and results["ibn"] == "b"
    # image CN; SN after the addition of the 4 blocks but the 2 that carry IBN-b's IN
    assert results["cn_units"] == 1 and results["sn_units"] == 2
    ces = {c: results[f"corruption/{c}/ce"] for c in CORRUPTIONS}
    assert len(ces) == 15
    for c in CORRUPTIONS:  # CE_c = sum_s E(c, s) / sum_s E_AlexNet(c, s), x100
        by_hand = 100 * sum(results[f"corruption/{c}/s{s}/error"] / 100 for s in range(1, 6)) \
            / (5 * ALEXNET_ERRORS[c])
        assert ces[c] == pytest.approx(by_hand)
    assert results["mce"] == pytest.approx(sum(ces.values()) / 15)
    assert "relative_mce" in results and "clean/top5_error" not in results  # 3 classes


def test_alexnet_normalization_by_hand():
    from snc.eval.robustness import corruption_metrics

    errors = {(c, s): 50.0 for c in CORRUPTIONS for s in range(1, 6)}
    errors[("fog", 3)] = 75.0
    out = corruption_metrics(errors, "imagenet", clean_error=25.0)
    assert out["corruption/brightness/ce"] == pytest.approx(100 * 0.5 / 0.564592)
    assert out["corruption/fog/ce"] == pytest.approx(100 * (2.0 + 0.75) / (5 * 0.819324))
    rel = 100 * (0.5 - 0.25) / (0.564592 - 0.43478)
    assert out["relative_mce"] > 0 and rel == pytest.approx(
        100 * (5 * 0.5 - 5 * 0.25) / (5 * (0.564592 - 0.43478)))


def test_ddp_gloo_two_processes_equal_single_process_evaluation(make_cfg, tmp_path):
    out_dir, data_dir = tmp_path / "out", tmp_path / "data"
    overrides = ["device=cpu", "logger=none", "progress=false", "backbone=wrn16_2",
                 "+backbone.overrides.depth=10", "+backbone.overrides.widen_factor=1",
                 "dataset.num_train=128", "dataset.num_test=45", "batch_size=32",
                 "eval_batch_size=16", "epochs=1", "sn=on", "cn=on", "cn.prob=1.0",
                 "experiment_name=ddp", "dataset.corruptions=[fog,contrast]",
                 f"paths.output_dir={out_dir}", f"paths.data_dir={data_dir}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29517", str(ROOT / "train.py"), *overrides]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((out_dir / "ddp").iterdir())
    assert len(runs) == 1
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["world_size"] == 2
    metrics = (runs[0] / "metrics.jsonl").read_text().splitlines()
    assert sum('"epoch": 1' in line for line in metrics) == 1  # rank 0 alone logs
    # single-process evaluation of the same weights on the same data
    from snc.data.datasets import build_data
    from snc.tasks.classify import build_network

    cfg = make_cfg(*overrides, tiny=False)
    data = build_data(cfg, torch.device("cpu"), progress=False)
    data.corrupted.prepare()
    model = build_network(cfg, data.num_classes)
    state = torch.load(runs[0] / "ckpt" / "last.pt", weights_only=True)
    model.load_state_dict(state["model"])
    wrong, total = count_errors(model, data.test)
    assert total == 45 and results["clean/error"] == pytest.approx(100 * wrong[1] / 45)
    for name, s, batches in data.corrupted:
        wrong, total = count_errors(model, batches())
        assert results[f"corruption/{name}/s{s}/error"] == pytest.approx(100 * wrong[1] / total)
