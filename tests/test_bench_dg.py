"""``scripts/bench.py task=dg`` and its reference pipelines (:mod:`snc.reference.dg`).

The references' batches on a tiny generated folder (shapes, labels, normalization); the bench
end to end at tiny sizes, in a subprocess (the printed lines, never the times).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snc.data.dg import IMAGENET_MEAN, IMAGENET_STD, scan_domains, write_domain_folder
from snc.reference import dg as ref

ROOT = Path(__file__).resolve().parents[1]
NUM = r"(\d+(?:\.\d+)?)"
DOMAINS = ("photo", "painting", "sketch")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = write_domain_folder(tmp_path_factory.mktemp("dg") / "set", per_class=4, size=40,
                               domains=DOMAINS)
    return scan_domains(root, DOMAINS)


def unnormalized(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


def test_domainbed_transform_is_domainbeds():
    names = [type(t).__name__ for t in ref.domainbed_transform().transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter",
                     "RandomGrayscale", "ToTensor", "Normalize"]
    t = ref.domainbed_transform().transforms
    assert t[0].size == (224, 224) and t[0].scale == (0.7, 1.0)
    assert t[2].brightness == (0.7, 1.3) and t[2].hue == (-0.3, 0.3) and t[3].p == 0.1
    names = [type(t).__name__ for t in ref.domainbed_transform(jitter=0, grayscale=0).transforms]
    assert "ColorJitter" not in names and "RandomGrayscale" not in names


def test_domainbed_batches(folder):
    """One batch per training domain per step, ``batch_size`` each, labels of that domain's
    split, ImageNet-normalized crops of the configured size."""
    torch.manual_seed(0)
    splits = {d: np.arange(folder.count(d))[: folder.count(d) - 2] for d in DOMAINS[:2]}
    batches = ref.domainbed_loaders(str(folder.root), DOMAINS[:2], splits,
                                    ref.domainbed_transform(size=24), batch_size=5,
                                    num_workers=0)
    for _ in range(3):  # endless: more batches than one pass over a split
        step = next(batches)
        assert len(step) == 2
        for d, (x, y) in zip(DOMAINS[:2], step, strict=True):
            assert x.shape == (5, 3, 24, 24) and x.dtype == torch.float32
            labels = {label for _, label in folder.files[d][:-2]}
            assert set(y.tolist()) <= labels
            raw = unnormalized(x)
            assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
            assert x.min() < 0  # normalized: below the mean somewhere


def test_erm_step_trains_with_frozen_batch_norm(folder):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 4))
    before = model[1].running_mean.clone()
    weight = model[4].weight.detach().clone()
    splits = {d: np.arange(folder.count(d)) for d in DOMAINS[:2]}
    batches = ref.domainbed_loaders(str(folder.root), DOMAINS[:2], splits,
                                    ref.domainbed_transform(size=16), 4, 0)
    step = ref.ERMStep(model, torch.optim.Adam(model.parameters(), 1e-2), batches,
                       torch.device("cpu"))
    step.step()
    assert step.last_loss is not None and np.isfinite(step.last_loss)
    assert torch.equal(model[1].running_mean, before)  # frozen statistics
    assert not torch.equal(model[4].weight, weight)
    x = step.data()
    assert [t[0].shape[0] for t in x] == [4, 4]


def test_dassl_batches(folder):
    items = [(str(folder.root / rel), label, k) for k, d in enumerate(DOMAINS)
             for rel, label in folder.files[d]]
    t = ref.dassl_transform(size=24)
    assert [type(x).__name__ for x in t.transforms] == [
        "Resize", "Random2DTranslation", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    loader = ref.dassl_loader(items, t, batch_size=7, num_workers=0)
    assert len(loader) == len(items) // 7  # drop_last
    batch = next(iter(loader))
    assert batch["img"].shape == (7, 3, 24, 24)
    assert set(batch["domain"].tolist()) <= {0, 1, 2}
    raw = unnormalized(batch["img"])
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 4))
    step = ref.VanillaStep(model, torch.optim.SGD(model.parameters(), 0.1), loader,
                           torch.device("cpu"))
    for _ in range(len(loader) + 1):  # past the end of an epoch: a new one
        step.step()
    loss, acc = step.last
    assert np.isfinite(loss) and 0 <= acc <= 100


def test_random_2d_translation_keeps_the_size():
    from PIL import Image

    img = Image.fromarray(np.zeros((30, 30, 3), np.uint8))
    t = ref.Random2DTranslation(24, 24, p=1.0)  # always the resize-and-crop branch
    assert t(img).size == (24, 24)


SYNTHETIC = ("dataset=dg_synthetic", "dataset.per_class=10")


def run_bench(tmp_path: Path, data=SYNTHETIC, *extra: str) -> list:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "task=dg", *data,
           "backbone=wrn16_2", "device=cpu", "batch_size=8", "+bench.steps=2",
           "+bench.warmup=1", "+bench.workers=1", "+bench.lead=1", "+bench.rounds=2",
           f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}",
           *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if line.strip()]


def find(lines: list, pattern: str) -> tuple:
    for line in lines:
        m = re.search(pattern, line)
        if m:
            return tuple(float(v) for v in m.groups())
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(lines))


def test_dg_bench_end_to_end(tmp_path):
    lines = run_bench(tmp_path)
    find(lines, r"^task=dg device=cpu .*dataset=dg_synthetic \(generated, 32 px\) "
                r"reference=DomainBed sampling=balanced test_domain=sketch "
                r".*batch=8x3 images/step=24 ")
    assert find(lines, rf"^decode once \(Pillow, 160 images to 32 px.*: {NUM} s, {NUM} img/s$")
    for name in ("snc", "reference", "snc data", "reference data"):
        values = find(lines, rf"^{name}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}$")
        assert values[0] > 0 and values[2] > 0 and values[3] > 0
    assert all(v > 0 for v in find(lines, rf"^data path alone \(no model\): snc {NUM} "
                                          rf"batches/s \({NUM} img/s\), reference {NUM} "
                                          rf"batches/s \({NUM} img/s\); "
                                          rf"data_speedup_vs_reference={NUM}$"))
    assert re.fullmatch(rf"speedup_vs_reference={NUM}", lines[-1]), lines[-1]
    assert find(lines[-1:], rf"={NUM}$")[0] > 0


@pytest.mark.slow
def test_dg_bench_stand_in_and_dassl(tmp_path):
    """A published set whose folder is missing runs on a stand-in (said in the header); the
    random sampling times Dassl's pipeline."""
    lines = run_bench(tmp_path, ("dataset=pacs", "dataset.image_size=32"),
                      "+bench.images=112", "task.sampling=random", "+bench.decode=false")
    find(lines, r"^task=dg .*dataset=pacs STAND-IN \(its folder is missing: 112 generated PNG "
                r"images in its layout, 4 domains x 7 classes, 227 x 227 px; .*\) "
                r"reference=Dassl sampling=random test_domain=sketch .*images/step=8 ")
    assert not any(line.startswith("decode once") for line in lines)
    assert re.fullmatch(rf"speedup_vs_reference={NUM}", lines[-1]), lines[-1]


def test_dg_dispatch():
    from snc.cli.bench_tasks import task_name

    assert task_name(["task=dg", "dataset=pacs"]) == "dg"
