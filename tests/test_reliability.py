"""Runs you can trust: content identity, one process per run directory, checkpoints that
survive torn files and kill -9, complete tracker history, inputs checked before anything is
written. Each test is one row of the README's "Reliability" table."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from snc.data import datasets
from snc.engine import run
from snc.engine.checkpoint import load_resumable, save_checkpoint
from snc.engine.lock import RunLock, RunLocked
from snc.engine.runner import run_dir_of
from snc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["evaluate_corruptions=false", "epochs=3"]
# the tiny settings without the synthetic dataset's keys, for dataset=npz
TINY_NPZ = [o for o in TINY if not o.startswith("dataset")]


def npz_cfg(make_cfg, path, *extra):
    return make_cfg(*TINY_NPZ, "dataset=npz", f"dataset.path={path}", *extra, tiny=False)


def write_npz(path, n_train=96, n_test=32, classes=4, seed=0, **replace):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "train_labels": np.arange(n_train) % classes,
        "test_images": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "test_labels": np.arange(n_test) % classes,
    }
    arrays.update(replace)
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------ inputs checked first


@pytest.mark.parametrize("replace, match", [
    ({"train_labels": np.r_[np.arange(95) % 4, 1000]}, "labels are not contiguous"),
    ({"train_labels": (np.arange(96) % 4).astype(np.float32)}, "must be integer"),
    ({"test_labels": np.r_[-1, np.arange(31) % 4]}, "labels include -1"),
    ({"train_images": np.zeros((96, 3, 32, 32), np.uint8)}, "channels-first"),
    ({"test_images": np.zeros((0, 32, 32, 3), np.uint8),
      "test_labels": np.zeros(0, np.int64)}, "test split is empty"),
    ({"train_images": np.zeros((96, 32, 32, 3), np.float32)}, "must be uint8"),
    ({"train_labels": np.arange(95) % 4}, "96 train images but labels of shape"),
])
def test_bad_arrays_fail_before_a_run_folder_exists(make_cfg, tmp_path, replace, match):
    path = write_npz(tmp_path / "bad.npz", **replace)
    cfg = npz_cfg(make_cfg, path, *SMALL)
    with pytest.raises(ConfigError, match=match):
        run(cfg)
    assert not (tmp_path / "outputs").exists()


def test_given_class_count_bounds_the_labels(make_cfg, tmp_path):
    path = write_npz(tmp_path / "d.npz", classes=4)
    with pytest.raises(ConfigError, match=r"label 3 but dataset.num_classes=3"):
        run(npz_cfg(make_cfg, path, "dataset.num_classes=3", *SMALL))
    not_npz = tmp_path / "d2.npz"
    not_npz.write_text("hello")
    with pytest.raises(ConfigError, match="is not a readable .npz"):
        run(npz_cfg(make_cfg, not_npz, *SMALL))


def test_unwritable_output_folder_fails_before_training(make_cfg):
    cfg = make_cfg(*SMALL, "paths.output_dir=/proc/snc-not-writable")
    with pytest.raises(ConfigError, match="cannot write the run directory"):
        run(cfg)


# ------------------------------------------------------------------ content identity


def test_edited_dataset_with_the_same_name_is_another_run_and_another_cache(make_cfg,
                                                                              tmp_path):
    path = tmp_path / "mine.npz"
    write_npz(path, seed=0)
    cfg = npz_cfg(make_cfg, path, "epochs=1", "dataset.corruptions=[fog]")
    first = run(cfg)
    first_sets = sorted((tmp_path / "data").glob("mine-C-generated-*"))
    write_npz(path, seed=1)  # same name, other images
    second = run(cfg)
    sets = sorted((tmp_path / "data").glob("mine-C-generated-*"))
    assert second["run_dir"] != first["run_dir"]  # not the old results.json
    assert len(first_sets) == 1 and len(sets) == 2  # a new corrupted set beside the old one
    old = json.loads((first_sets[0] / "manifest.json").read_text())
    new = json.loads((sorted(set(sets) - set(first_sets))[0] / "manifest.json").read_text())
    assert old["source_sha256"] != new["source_sha256"]
    assert old["files"]["fog.npy"] == json.loads(
        (first_sets[0] / "manifest.json").read_text())["files"]["fog.npy"]  # untouched


def test_world_size_is_part_of_the_identity(make_cfg):
    cfg = make_cfg(*SMALL)
    assert run_dir_of(cfg, world=1) != run_dir_of(cfg, world=2)
    assert run_dir_of(cfg, world=1) == run_dir_of(cfg, world=1)


def test_explicit_corrupted_dir_from_other_images_is_kept_and_a_sibling_used(make_cfg,
                                                                              tmp_path):
    a, b = write_npz(tmp_path / "a.npz", seed=0), write_npz(tmp_path / "b.npz", seed=1)
    shared = tmp_path / "shared-C"
    common = ["epochs=1", f"dataset.corrupted_dir={shared}", "dataset.corruptions=[contrast]"]
    run(npz_cfg(make_cfg, a, *common))
    before = (shared / "contrast.npy").read_bytes()
    results = run(npz_cfg(make_cfg, b, *common))
    assert (shared / "contrast.npy").read_bytes() == before  # never generated over
    assert results["corrupted_dir"] != str(shared) and Path(results["corrupted_dir"]).exists()


def fake_cifar_c(root, names=("fog",), n=20, value=7):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        np.save(root / f"{name}.npy", np.full((5 * n, 32, 32, 3), value, np.uint8))
    np.save(root / "labels.npy", np.arange(5 * n) % 10)
    return root


def test_published_set_is_verified_once_and_an_altered_file_is_named(tmp_path, monkeypatch):
    from snc.data import download

    root = fake_cifar_c(tmp_path / "CIFAR-10-C")
    with pytest.raises(ConfigError, match=r"fog.npy does not match its published MD5.*"
                                          r"download_cifar_c.py cifar10"):
        datasets.verify_published(root, ["fog"], "cifar10")  # zeroed/foreign content
    real = {f: download.md5_file(root / f) for f in ("fog.npy", "labels.npy")}
    monkeypatch.setitem(download.CIFAR_C_FILE_MD5, "cifar10", real)
    calls = []
    monkeypatch.setattr(download, "md5_file", lambda p: calls.append(p) or real[p.name])
    ident = datasets.verify_published(root, ["fog"], "cifar10")
    assert ident == real and len(calls) == 2
    datasets.verify_published(root, ["fog"], "cifar10")
    assert len(calls) == 2  # remembered by size + mtime
    fake_cifar_c(root, value=0)  # same size, new content and mtime
    monkeypatch.setattr(download, "md5_file", lambda p: "0" * 32)
    with pytest.raises(ConfigError, match="fog.npy does not match"):
        datasets.verify_published(root, ["fog"], "cifar10")


# ------------------------------------------------------------------ one process per run


def test_a_second_holder_is_refused_with_who_holds_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from snc.engine.lock import RunLock\n"
        f"l = RunLock({str(tmp_path)!r}); l.acquire(); print('held', flush=True); "
        "time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on .* wait_for_lock=true"):
            RunLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel frees the lock
        holder.wait()
        lock = RunLock(tmp_path, wait=True, poll_seconds=0.05)
        lock.acquire()
        lock.release()
    finally:
        holder.kill()


def train_cmd(tmp_path, *extra):
    return [sys.executable, str(ROOT / "train.py"), f"paths.output_dir={tmp_path / 'out'}",
            f"paths.data_dir={tmp_path / 'data'}", "device=cpu", "logger=none",
            "progress=false", "backbone=wrn16_2", "+backbone.overrides.depth=10",
            "+backbone.overrides.widen_factor=1", "dataset.num_train=256",
            "dataset.num_test=64", "batch_size=32", "evaluate_corruptions=false",
            "experiment_name=rel", *extra]


def test_two_concurrent_launches_one_trains_the_other_says_who(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    long = ["epochs=30"]  # long enough that the second launch finds it training
    first = subprocess.Popen(train_cmd(tmp_path, *long), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "out").glob("rel/*/train.log")) and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(train_cmd(tmp_path, *long), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-2000:]
    assert second.returncode != 0
    assert "is being trained by pid" in second.stderr + second.stdout
    run_dir = next((tmp_path / "out" / "rel").iterdir())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == list(range(1, 31))  # one writer


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_writer_survives_two_concurrent_writers(tmp_path):
    script = ("import sys, torch; from snc.engine.checkpoint import save_checkpoint\n"
              "for i in range(40):\n"
              "    save_checkpoint({'w': torch.full((2000,), float(i)), 'who': sys.argv[1]}, "
              f"__import__('pathlib').Path({str(tmp_path / 'last.pt')!r}))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)], stderr=subprocess.PIPE,
                              text=True) for k in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    state, path = load_resumable(tmp_path)
    assert path.name == "last.pt" and state["w"].shape == (2000,)
    assert not list(tmp_path.glob("*.tmp"))


def test_torn_last_checkpoint_resumes_from_the_previous_one(make_cfg, tmp_path, kill_run):
    overrides = ["sn=on", "cn=on", "cn.prob=0.5", "epochs=3", "evaluate_corruptions=false"]
    straight = run(make_cfg(*overrides, f"paths.output_dir={tmp_path / 'a'}"))
    cfg = make_cfg(*overrides, f"paths.output_dir={tmp_path / 'b'}")
    kill_run(cfg, at=3)
    ckpt = run_dir_of(cfg) / "ckpt"
    data = (ckpt / "last.pt").read_bytes()
    (ckpt / "last.pt").write_bytes(data[: len(data) // 2])  # torn by something outside
    resumed = run(cfg)  # epoch 2 from prev.pt (epoch 1), then epoch 3
    assert resumed["clean/error"] == straight["clean/error"]
    assert resumed["train/final_epoch_loss"] == straight["train/final_epoch_loss"]
    rows = [json.loads(x) for x in (run_dir_of(cfg) / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == [1, 2, 3]  # no doubled rows
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == sorted(set(steps))


def test_no_usable_checkpoint_is_one_line_naming_the_files_and_the_fix(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"torn")
    with pytest.raises(ConfigError, match=r"no usable checkpoint in .*last.pt: unreadable.*"
                                          r"prev.pt: missing.*rm -r"):
        load_resumable(tmp_path / "ckpt")
    save_checkpoint({"a": 1}, tmp_path / "x" / "last.pt")
    save_checkpoint({"a": 2}, tmp_path / "x" / "last.pt")
    assert torch.load(tmp_path / "x" / "prev.pt", weights_only=True) == {"a": 1}


# ------------------------------------------------------------------ trackers


class FakeRun:
    def __init__(self, store, run_id):
        self.id, self.step, self.store, self.summary = run_id, 0, store, {}

    def define_metric(self, *a, **k):
        pass

    def log(self, data, step=None):
        self.store["logged"].append((self.id, step, dict(data)))

    def finish(self, exit_code=0):
        self.store["finished"].append(exit_code)


def test_resumed_run_continues_the_wandb_id_and_replays_the_history(make_cfg, tmp_path,
                                                                     monkeypatch, kill_run):
    import types

    store = {"inits": [], "logged": [], "finished": []}
    fake = types.SimpleNamespace(
        init=lambda **kw: store["inits"].append(kw) or FakeRun(store, kw.get("id") or "run1"),
        Table=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = make_cfg("logger=wandb", "epochs=3", "evaluate_corruptions=false", "log_every=2",
                   f"paths.output_dir={tmp_path / 'w'}")
    kill_run(cfg, at=3)
    store["logged"].clear()  # what the killed part logged is treated as lost
    results = run(cfg)
    assert store["inits"][1]["id"] == "run1" and store["inits"][1]["resume"] == "allow"
    local = [json.loads(x) for x in (Path(results["run_dir"]) / "metrics.jsonl").read_text()
             .splitlines()]
    logged = [(step, d) for _, step, d in store["logged"] if "corruption_errors" not in d]
    assert [s for s, _ in logged] == [r["step"] for r in local]  # complete, in order
    assert [d.get("epoch") for _, d in logged if "epoch" in d] == [1, 2, 3]


# ------------------------------------------------------------------ kill -9 anywhere


def kill_points(n, duration, seed=0):
    """``n`` kill times in seconds after launch, spread over start-up, training, checkpoint
    writes and evaluation of a run that takes ``duration`` seconds from scratch."""
    rng = random.Random(seed)
    return [rng.uniform(0.3, 0.9) * duration for _ in range(n)]


@pytest.mark.parametrize("points", [pytest.param(3, id="3-kills"),
                                    pytest.param(10, id="10-kills",
                                                 marks=pytest.mark.slow)])
def test_kill_9_at_random_points_loses_nothing(tmp_path, points):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    extra = ["epochs=4", "sn=on", "cn=on", "cn.prob=0.5"]
    start = time.perf_counter()
    straight = subprocess.run(train_cmd(tmp_path / "a", *extra), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    duration = time.perf_counter() - start
    assert straight.returncode == 0, straight.stderr[-2000:]
    kills, codes = 0, []
    for delay in kill_points(points, duration):
        proc = subprocess.Popen(train_cmd(tmp_path / "b", *extra), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            codes.append((proc.wait(timeout=delay), proc.stderr.read()[-500:]))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # anywhere: start-up, an epoch, a checkpoint write
            proc.wait()
            kills += 1
    final = subprocess.run(train_cmd(tmp_path / "b", *extra), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    a = json.loads(next((tmp_path / "a" / "out" / "rel").glob("*/results.json")).read_text())
    b_dir = next((tmp_path / "b" / "out" / "rel").glob("*/results.json")).parent
    b = json.loads((b_dir / "results.json").read_text())
    for key in ("clean/error", "train/final_epoch_loss", "train/first_epoch_loss"):
        assert a[key] == b[key], key
    rows = [json.loads(x) for x in (b_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == [1, 2, 3, 4]
    assert kills >= 1, codes
