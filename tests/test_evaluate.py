"""`python -m snc.evaluate` and the evaluation every training run ends with: one suite of
shifts, the same numbers from a run directory, a checkpoint or the end of training."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from omegaconf import OmegaConf

from snc.engine import run
from snc.errors import ConfigError
from snc.evaluate import evaluate

FAST = ["dataset.num_test=40", "evaluate.bootstrap=0"]


@pytest.fixture
def finished(make_cfg):
    """A finished tiny run (generated -C set of its 40 test images) and its results."""
    cfg = make_cfg(*FAST, "epochs=1")
    results = run(cfg)
    return cfg, Path(results["run_dir"]), results


def test_training_ends_with_one_block_per_shift_and_the_headline_keys(finished):
    _, run_dir, results = finished
    block = results["shifts"]["synthetic_c"]
    assert block["kind"] == "corruptions" and block["set"] == "generated"
    assert block["num_images"] == 40
    # the headline keys are the dataset's own corrupted set, as before
    assert results["mce"] == block["mce"]
    for key in ("corruption/fog/s3/error", "corruption/fog/error"):
        assert results[key] == block[key]
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["shifts"]["synthetic_c"]["mce"] == results["mce"]
    rows = list(csv.DictReader(open(run_dir / "errors.csv")))
    assert len(rows) == 1 + 75 and rows[0]["shift"] == "clean"
    fog3 = [r for r in rows if r["corruption"] == "fog" and r["severity"] == "3"]
    assert float(fog3[0]["error"]) == pytest.approx(results["corruption/fog/s3/error"], abs=1e-4)
    bench = json.loads((run_dir / "robustbench.json").read_text())
    entry = bench["datasets"]["synthetic_c"]
    assert bench["threat_model"] == "corruptions" and entry["generated"] is True
    assert float(entry["corruptions_acc"]) == pytest.approx(100 - results["mce"], abs=0.006)


def test_a_run_directory_evaluated_again_gives_its_numbers_and_keeps_its_keys(finished, make_cfg):
    _, run_dir, results = finished
    before = json.loads((run_dir / "results.json").read_text())
    again = evaluate(make_cfg(f"run_dir={run_dir}", *FAST, name="evaluate"), overrides=[])
    assert again["clean/error"] == results["clean/error"] and again["mce"] == results["mce"]
    after = json.loads((run_dir / "results.json").read_text())
    for key, value in before.items():  # every training key is kept
        if key != "shifts":
            assert after[key] == value, key
    assert after["shifts"]["synthetic_c"]["mce"] == results["mce"]


def test_a_finished_run_asked_for_more_shifts_says_how_to_add_them(finished, make_cfg,
                                                                    capsys):
    cfg, run_dir, results = finished
    again = run(make_cfg(*FAST, "epochs=1", "evaluate.shifts=[corrupted,corrupted_bar]"))
    assert again["run_dir"] == str(run_dir) and "synthetic_c_bar" not in again["shifts"]
    out = capsys.readouterr().out
    assert (f"not evaluated: synthetic_c_bar (python -m snc.evaluate run_dir={run_dir} "
            "shifts=[synthetic_c,synthetic_c_bar])") in out


def test_a_checkpoint_with_the_models_groups_gives_the_same_numbers(finished, make_cfg):
    _, run_dir, results = finished
    cfg = make_cfg(f"checkpoint={run_dir / 'ckpt' / 'last.pt'}", *FAST, "epochs=1",
                   name="evaluate")
    out = evaluate(cfg, overrides=[])
    assert out["clean/error"] == results["clean/error"] and out["mce"] == results["mce"]
    assert Path(out["run_dir"]).parent.name == "evaluate"
    assert (Path(out["run_dir"]) / "robustbench.json").exists()


def test_bad_sources_fail_with_the_fix(finished, make_cfg, tmp_path):
    _, run_dir, _ = finished
    with pytest.raises(ConfigError, match="holds no config.yaml"):
        evaluate(make_cfg(f"run_dir={tmp_path}", name="evaluate"), overrides=[])
    with pytest.raises(ConfigError, match="run_dir or checkpoint, not both"):
        evaluate(make_cfg(f"run_dir={run_dir}", f"checkpoint={run_dir}/ckpt/last.pt",
                          name="evaluate"), overrides=[])
    with pytest.raises(ConfigError, match="the model and data are the run's own"):
        evaluate(make_cfg(f"run_dir={run_dir}", name="evaluate"),
                 overrides=[f"run_dir={run_dir}", "backbone=wrn40_2"])
    with pytest.raises(ConfigError, match="does not fit the model"):
        evaluate(make_cfg(f"checkpoint={run_dir}/ckpt/last.pt",
                          "backbone.overrides.widen_factor=2", *FAST, name="evaluate"),
                 overrides=[])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        evaluate(make_cfg(f"checkpoint={tmp_path / 'junk.pt'}", *FAST, name="evaluate"),
                 overrides=[])


def test_held_out_corruptions_are_evaluated_but_stay_out_of_the_mce(make_cfg):
    results = run(make_cfg(*FAST, "epochs=1", "evaluate.validation=extra"))
    for name in ("speckle_noise", "gaussian_blur", "spatter", "saturate"):
        assert f"corruption/{name}/error" in results
    from snc.corruptions import CORRUPTIONS
    from snc.eval.robustness import cifar_mce

    errors = {(c, s): results[f"corruption/{c}/s{s}/error"] for c in CORRUPTIONS
              for s in range(1, 6)}
    assert results["mce"] == pytest.approx(cifar_mce(errors))


def test_unknown_validation_setting_is_refused(make_cfg):
    from snc.engine.runner import validate

    with pytest.raises(ConfigError, match="evaluate.validation='test'"):
        validate(make_cfg("evaluate.validation=test"))


def test_cifar_c_is_downloaded_with_the_clean_set(server, tmp_path, monkeypatch, make_cfg):
    """The headline command fetches CIFAR-10-C itself (resumable, MD5-checked) when
    dataset.download is on, instead of stopping with a command to run by hand."""
    import hashlib
    import io
    import tarfile

    from snc.data import datasets, download

    served, base = server
    files, names = {}, ("fog", "labels")
    with tarfile.open(served / "CIFAR-10-C.tar", "w") as tar:
        for name in names:
            array = (np.arange(50) % 10 if name == "labels"
                     else np.zeros((50, 32, 32, 3), np.uint8))
            buf = io.BytesIO()
            np.save(buf, array)
            files[f"{name}.npy"] = hashlib.md5(buf.getvalue()).hexdigest()
            info = tarfile.TarInfo(f"CIFAR-10-C/{name}.npy")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    md5 = hashlib.md5((served / "CIFAR-10-C.tar").read_bytes()).hexdigest()
    monkeypatch.setitem(download.CIFAR_C, "cifar10", (f"{base}/CIFAR-10-C.tar", md5,
                                                      "CIFAR-10-C"))
    monkeypatch.setitem(download.CIFAR_C_FILE_MD5, "cifar10", files)
    cfg = make_cfg("dataset=cifar10", "dataset.corruptions=[fog]", tiny=False)
    root = Path(cfg.dataset.corrupted_dir)
    datasets._download_published(cfg, root)
    assert (root / "fog.npy").exists() and datasets.verify_published(root, ["fog"], "cifar10")
    cfg = make_cfg("dataset=cifar10", "dataset.download=false", tiny=False)
    other = tmp_path / "elsewhere" / "CIFAR-10-C"
    datasets._download_published(cfg, other)  # download off: nothing fetched
    assert not other.exists()


# ------------------------------------------------------------------------------- the registry


def test_cifar10_1_is_evaluated_in_its_own_block(make_cfg, tmp_path, monkeypatch):
    """A published single set through the suite: loaded, normalised like the test set,
    counted over every image, and kept per image."""
    from test_shifts import fake_cifar10_1, with_checksums_of

    rng = np.random.default_rng(0)
    path = tmp_path / "ten.npz"  # a 10-class model, as a CIFAR-10 one
    np.savez(path, train_images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             train_labels=np.arange(40) % 10,
             test_images=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             test_labels=np.arange(20) % 10)
    fake_cifar10_1(tmp_path / "data" / "CIFAR-10.1", n=30)
    with_checksums_of(monkeypatch, "cifar10_1", checksums={})  # fake files: not the published
    tiny = [o for o in TINY if not o.startswith("dataset")]
    results = run(make_cfg(*tiny, "dataset=npz", f"dataset.path={path}",
                           "dataset.corrupted=none", "evaluate.shifts=[corrupted,cifar10_1]",
                           "epochs=1", "evaluate.bootstrap=0", tiny=False))
    block = results["shifts"]["cifar10_1"]
    assert block["kind"] == "single" and block["num_images"] == 30
    assert 0 <= block["error"] <= 100
    assert list(results["shifts"]) == ["cifar10_1"] and "mce" not in results  # corrupted=none


def test_shift_names_and_fits_are_checked_before_anything_is_written(make_cfg, tmp_path):
    from snc.engine.runner import validate

    with pytest.raises(ConfigError, match="unknown shift 'cifar10_2'.*cifar10_1"):
        validate(make_cfg("evaluate.shifts=[cifar10_2]"))
    with pytest.raises(ConfigError, match="cifar10_1 is a CIFAR-10 test set.*100 classes"):
        validate(make_cfg("dataset.num_classes=100", "evaluate.shifts=[cifar10_1]"))
    with pytest.raises(ConfigError, match="imagenet_r is an ImageNet test set"):
        validate(make_cfg("evaluate.shifts=[imagenet_r]"))
    assert not (tmp_path / "outputs").exists()


def test_subset_head_keeps_the_columns_of_the_sets_classes():
    import torch

    from snc.eval.suite import _SubsetHead

    model = torch.nn.Linear(4, 1000)
    head = _SubsetHead(model, [3, 999, 10])
    x = torch.randn(2, 4)
    assert torch.equal(head(x), model(x)[:, [3, 999, 10]])


def test_the_demo_shifts_carry_intervals_and_per_image_rows(make_cfg):
    """Every offline shift of a synthetic model: its -C and -C-bar sets, generated from its
    test images, each with a 95 % interval that holds its number; the per-image file has the
    rows the intervals were resampled from."""
    results = run(make_cfg("dataset.num_test=40", "epochs=1", "evaluate.bootstrap=200",
                           "evaluate.shifts=[corrupted,corrupted_bar]"))
    c, bar = results["shifts"]["synthetic_c"], results["shifts"]["synthetic_c_bar"]
    assert bar["kind"] == "corruptions" and bar["set"] == "generated"
    from snc.corruptions import CBAR_CORRUPTIONS

    errors = [bar[f"corruption/{n}/s{s}/error"] for n in CBAR_CORRUPTIONS["cifar"]
              for s in range(1, 6)]
    assert bar["mce"] == pytest.approx(sum(errors) / 50)  # -C-bar: the plain mean of its 50
    for block in (c, bar):
        low, high = block["ci95"]["mce"]
        assert low <= block["mce"] <= high
    low, high = results["ci95"]["clean/error"]
    assert low <= results["clean/error"] <= high
    assert results["ci95"]["mce"] == list(c["ci95"]["mce"])
    assert results["bootstrap"] == {"resamples": 200, "seed": 0, "level": 0.95}
    with np.load(Path(results["run_dir"]) / "per_image.npz", allow_pickle=False) as f:
        assert f["clean"].shape == (40,) and f["clean"].dtype == bool
        assert f["synthetic_c_bar/lines/s2"].shape == (40,)
        assert 100 * (1 - f["clean"].mean()) == pytest.approx(results["clean/error"])
        fog = f["synthetic_c/fog/s3"]
        assert 100 * (1 - fog.mean()) == pytest.approx(results["corruption/fog/s3/error"])


def test_imagenet_r_on_a_1000_class_head_needs_only_the_validation_images(make_cfg, tmp_path):
    """python -m snc.evaluate on ImageNet: val/ alone (no train/), a 1000-class head, and
    ImageNet-R's labels in its own 200 classes scored on the head's 200 columns."""
    from test_shifts import fake_folder_set

    from snc.shifts import get_shift, imagenet_wnids

    data = tmp_path / "data"
    wnids = imagenet_wnids()
    fake_folder_set(data / "imagenet" / "val", {wnids[0]: ["a.JPEG"], wnids[1]: ["b.JPEG"]})
    r_wnids = get_shift("imagenet_r").class_wnids
    fake_folder_set(data / "imagenet-r", {r_wnids[0]: ["x.jpg", "y.jpg"], r_wnids[5]: ["z.jpg"]})
    tiny = [o for o in TINY if not o.startswith("dataset")]
    cfg = make_cfg(*tiny, "dataset=imagenet", "dataset.num_classes=1000", "dataset.workers=0",
                   "dataset.corrupted=none", "shifts=[imagenet_r]", "evaluate.bootstrap=50",
                   "weights=random", name="evaluate", tiny=False)
    out = evaluate(cfg, overrides=[])
    block = out["shifts"]["imagenet_r"]
    assert block["num_images"] == 3 and block["classes"] == 200
    low, high = block["ci95"]["error"]
    assert low <= block["error"] <= high
    assert out["clean/error"] >= 0 and "mce" not in out


def test_allowed_overrides_of_a_run_are_applied_and_only_those(finished, make_cfg):
    from snc.evaluate import config_of_run

    _, run_dir, _ = finished
    cfg = make_cfg(f"run_dir={run_dir}", "channels_last=true", "eval_batch_size=16",
                   "dataset.corrupted_dir=/elsewhere", "shifts=[corrupted,corrupted_bar]",
                   name="evaluate")
    base = config_of_run(run_dir, cfg, [f"run_dir={run_dir}", "channels_last=true",
                                        "eval_batch_size=16", "dataset.corrupted_dir=/elsewhere",
                                        "shifts=[corrupted,corrupted_bar]"])
    assert base.channels_last is True and base.eval_batch_size == 16
    assert base.dataset.corrupted_dir == "/elsewhere"
    assert list(base.evaluate.shifts) == ["corrupted", "corrupted_bar"]
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert base.backbone == saved.backbone and base.dataset.num_test == saved.dataset.num_test


def test_one_process_downloads_first_and_the_others_find_its_files(tmp_path):
    """Under torchrun a download into the shared data folder is made by rank 0 alone; the other
    ranks run the same block after it (and find the files), also when rank 0 fails."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ranks.py"
    script.write_text(f'''
import os, sys, time
import torch.distributed as dist
from snc.distributed import main_process_first
dist.init_process_group("gloo", init_method="file://{tmp_path}/rdv", rank=int(sys.argv[1]),
                        world_size=2)
log = "{tmp_path}/order"
try:
    with main_process_first():
        if dist.get_rank() == 0:
            time.sleep(0.5)
        open(log, "a").write(str(dist.get_rank()))
        if sys.argv[2] == "fail":
            raise ValueError("offline")
except ValueError:
    pass
dist.barrier()
dist.destroy_process_group()
''')
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for mode in ("ok", "fail"):
        (tmp_path / "order").unlink(missing_ok=True)
        (tmp_path / "rdv").unlink(missing_ok=True)
        procs = [subprocess.Popen([sys.executable, str(script), str(r), mode], env=env)
                 for r in (1, 0)]
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
        assert (tmp_path / "order").read_text() == "01"


def test_corrupted_blocks_stream_one_ahead_with_exact_counts(finished, make_cfg, monkeypatch):
    """The blocks of a CIFAR-C-style set are read ahead on a thread (pinned on CUDA): the same
    numbers as reading each block when it is evaluated, in the same order."""
    from snc.data import datasets

    _, run_dir, results = finished
    monkeypatch.setattr(datasets, "PREFETCH_BYTES", 0)  # every block read when it is due
    again = evaluate(make_cfg(f"run_dir={run_dir}", *FAST, name="evaluate"), overrides=[])
    assert again["mce"] == results["mce"]
    for key in ("corruption/fog/s1/error", "corruption/jpeg_compression/s5/error"):
        assert again[key] == results[key]


def test_evaluate_amp_is_checked(make_cfg):
    with pytest.raises(ConfigError, match="evaluate.amp='fp8'"):
        run(make_cfg("evaluate.amp=fp8"))


@pytest.mark.slow
def test_evaluate_amp_bf16_runs(make_cfg):
    results = run(make_cfg(*FAST, "epochs=1", "evaluate.amp=bf16"))
    assert 0 <= results["clean/error"] <= 100 and 0 <= results["mce"] <= 100
