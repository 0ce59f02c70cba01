"""The edges a tired researcher hits: no model behind a number, files a colleague cannot read,
numbers that never reach W&B, Hydra's own errors, a full disk, empty folders left behind.
Each test is a row of the README's "Reliability" table."""

import errno
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR

from snc import atomic
from snc.atomic import DiskFull, atomic_open, new_folders
from snc.engine import run
from snc.engine.checkpoint import save_checkpoint
from snc.errors import ConfigError
from snc.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
FAST = ["dataset.num_test=40", "evaluate.bootstrap=0"]


def snc_cmd(*args, cwd, module=None, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("SNC_TRACEBACK", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", module] if module else [sys.executable, str(ROOT / "train.py")]
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


# ------------------------------------------------------------------ evaluation needs a model


@pytest.mark.parametrize("words", [[], pytest.param(["run=somewhere"], marks=pytest.mark.slow),
                                   ["+run=somewhere"]], ids=["bare", "run=", "+run="])
def test_evaluate_without_a_model_refuses_before_anything_is_made(tmp_path, words):
    done = snc_cmd(*words, cwd=tmp_path, module="snc.evaluate")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snc: error: ")
    if words:
        assert "did you mean run_dir" in lines[0]
    else:
        assert ("needs a model: give run_dir=" in lines[0] and "checkpoint=" in lines[0]
                and "backbone.weights=" in lines[0] and "weights=random" in lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, no data/


def test_random_weights_are_asked_for_and_marked_untrained(make_cfg, tmp_path):
    from snc.report.collect import find_results

    out = evaluate(make_cfg(*FAST, "weights=random", name="evaluate"), overrides=[])
    assert out["untrained"] is True and out["weights"] == "random"
    stored = json.loads((Path(out["run_dir"]) / "results.json").read_text())
    assert stored["untrained"] is True
    runs = find_results([tmp_path / "outputs"])
    assert [r["method"] for r in runs] == ["basic (untrained)"]
    # an evaluation from before weights=random, with no record of what was loaded: left out
    stored.pop("untrained")
    stored["weights"] = None
    (Path(out["run_dir"]) / "results.json").write_text(json.dumps(stored))
    assert find_results([tmp_path / "outputs"]) == []


def test_weights_random_with_a_run_contradicts(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="contradict"):
        evaluate(make_cfg(f"run_dir={tmp_path}", "weights=random", name="evaluate"),
                 overrides=[])
    with pytest.raises(ConfigError, match="only value is weights=random"):
        evaluate(make_cfg("weights=trained", name="evaluate"), overrides=[])


def test_a_failed_evaluation_leaves_no_folder(make_cfg, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        evaluate(make_cfg(f"checkpoint={tmp_path / 'junk.pt'}", *FAST, name="evaluate"),
                 overrides=[])
    assert not list((tmp_path / "outputs").glob("evaluate/*"))


# ------------------------------------------------------------------ permissions


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_permissions_open_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_open(tmp_path / "results.json", "w") as f:
            f.write("{}")
        save_checkpoint({"a": torch.zeros(2)}, tmp_path / "ckpt" / "last.pt")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    for name in ("results.json", "ckpt/last.pt", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_a_runs_files_are_readable_by_others_under_umask_022(make_cfg):
    old = os.umask(0o022)
    try:
        results = run(make_cfg(*FAST, "epochs=1"))
    finally:
        os.umask(old)
    run_dir = Path(results["run_dir"])
    for name in ("results.json", "errors.csv", "robustbench.json", "ckpt/last.pt",
                 "metrics.jsonl", "config.yaml"):
        assert (run_dir / name).stat().st_mode & 0o044 == 0o044, name


# ------------------------------------------------------------------ W&B


class FakeRun:
    def __init__(self, store, kw):
        self.id, self.step, self.store, self.summary = kw.get("id") or "fake1", 0, store, {}
        self.kw = kw

    def define_metric(self, *a, **k):
        pass

    def log(self, data, step=None):
        self.store["logged"].append((step, dict(data)))

    def finish(self, exit_code=0):
        self.store["finished"].append(exit_code)
        self.store["summaries"].append(dict(self.summary))


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    store = {"inits": [], "logged": [], "finished": [], "summaries": []}

    def init(**kw):
        store["inits"].append(kw)
        return FakeRun(store, kw)

    fake = types.SimpleNamespace(init=init, Table=lambda **kw: ("table", kw))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return store


def test_a_local_only_run_is_synced_to_wandb_from_its_files(make_cfg, fake_wandb, capsys):
    from snc.tracking.sync import main as sync_main

    results = run(make_cfg(*FAST, "epochs=2", "evaluate.shifts=[corrupted,corrupted_bar]"))
    run_dir = Path(results["run_dir"])
    assert fake_wandb["inits"] == [] and not (run_dir / "wandb.json").exists()
    assert sync_main(["sync", str(run_dir)]) == 0
    init = fake_wandb["inits"][0]
    assert init["mode"] == "offline" and init["job_type"] == "basic"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    replayed = [step for step, d in fake_wandb["logged"] if "corruption_errors" not in d
                and not any(k.endswith("corruption_errors") for k in d)]
    assert replayed == [r["step"] for r in rows]
    summary = fake_wandb["summaries"][0]
    assert summary["mce"] == results["mce"]
    bar = results["shifts"]["synthetic_c_bar"]
    assert summary["synthetic_c_bar/mce"] == bar["mce"]  # a flat key for every shift
    tables = {k: v for _, d in fake_wandb["logged"] for k, v in d.items() if "corruption" in k}
    assert set(tables) == {"corruption_errors", "synthetic_c/corruption_errors",
                           "synthetic_c_bar/corruption_errors"}
    names = {k.split("/")[1] for k in bar if k.startswith("corruption/") and k.count("/") == 3}
    assert len(names) >= 10  # every -C-bar corruption is a row of its table
    assert sorted(r[0] for r in tables["synthetic_c_bar/corruption_errors"][1]["data"]) == \
        sorted(names)
    record = json.loads((run_dir / "wandb.json").read_text())
    assert record["id"] == "fake1"
    assert "wandb sync" in capsys.readouterr().out
    assert sync_main(["sync", str(run_dir)]) == 2  # already logged: says so
    assert "already logged to W&B run fake1" in capsys.readouterr().err


def test_the_same_command_with_logger_wandb_logs_a_finished_local_run(make_cfg, fake_wandb):
    results = run(make_cfg(*FAST, "epochs=1"))
    again = run(make_cfg(*FAST, "epochs=1", "logger=wandb"))
    assert again["run_dir"] == results["run_dir"] and len(fake_wandb["inits"]) == 1
    assert (Path(results["run_dir"]) / "wandb.json").exists()
    run(make_cfg(*FAST, "epochs=1", "logger=wandb"))  # logged once, not again
    assert len(fake_wandb["inits"]) == 1


def test_evaluate_logs_into_the_runs_own_wandb_run(make_cfg, fake_wandb):
    results = run(make_cfg(*FAST, "epochs=1", "logger=wandb"))
    run_id = fake_wandb["inits"][0]["id"] or "fake1"
    evaluate(make_cfg(f"run_dir={results['run_dir']}", *FAST, "logger=wandb",
                      "shifts=[corrupted,corrupted_bar]", name="evaluate"), overrides=[])
    second = fake_wandb["inits"][1]
    assert second["id"] == run_id and second["resume"] == "allow"
    assert "synthetic_c_bar/mce" in fake_wandb["summaries"][-1]


def test_evaluate_of_a_checkpoint_logs_a_new_eval_run(make_cfg, fake_wandb):
    results = run(make_cfg(*FAST, "epochs=1"))
    ckpt = Path(results["run_dir"]) / "ckpt" / "last.pt"
    evaluate(make_cfg(f"checkpoint={ckpt}", *FAST, "epochs=1", "logger=wandb",
                      name="evaluate"), overrides=[])
    init = fake_wandb["inits"][0]
    assert init["job_type"] == "eval" and init["id"] is None


def test_online_without_credentials_falls_back_to_offline(fake_wandb, tmp_path, caplog):
    from snc.tracking.wandb import WandbTracker

    tracker = WandbTracker(tmp_path, project="p", mode="online")
    assert tracker.start({}, name="r", group="g", job_type="basic", tags=[]) == "fake1"
    assert fake_wandb["inits"][0]["mode"] == "offline"
    warned = [r.getMessage() for r in caplog.records if "credentials" in r.getMessage()]
    assert len(warned) == 1 and "wandb sync" in warned[0]
    assert json.loads((tmp_path / "wandb.json").read_text())["mode"] == "offline"


def test_online_with_credentials_stays_online(fake_wandb, tmp_path, monkeypatch):
    from snc.tracking.wandb import WandbTracker

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    WandbTracker(tmp_path, project="p", mode="online").start(
        {}, name="r", group="g", job_type="basic", tags=[])
    assert fake_wandb["inits"][0]["mode"] == "online"


# ------------------------------------------------------------------ Hydra-level mistakes


HYDRA_MISTAKES = [
    (["sn=true"], "sn takes off|on|se; got 'true'"),
    (["cnn.prob=0.3"], "unknown key 'cnn.prob'; did you mean cn.prob"),
    (["run_dir=x"], "unknown key 'run_dir'"),
    (["cn.prob=0.3"], "cn.prob is an option of cn=on: add cn=on"),
    (["cn=on", "cn.prob=abc"], "cn.prob takes a float; got 'abc'"),
    (["dataset=cifar"], "dataset takes cifar10, cifar100"),
    (["shifts=a,b"], "shifts=a,b: a list is written in brackets, shifts=[a,b]"),
    (["+bad"], "cannot read the override '+bad'"),
]


@pytest.mark.parametrize("words,message", HYDRA_MISTAKES)
def test_hydra_composition_errors_are_explained(words, message):
    """What Hydra raises while composing (the same exceptions as under @hydra.main) becomes
    snc's message; the end-to-end exit code and single line are checked below."""
    from hydra import compose, initialize_config_dir

    from snc.cli.launch import explain

    with pytest.raises(Exception) as caught:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("train", overrides=words)
    said = explain(caught.value, words, Path(CONFIG_DIR), "train")
    assert said is not None and message in said and "+" + words[-1] not in said


@pytest.mark.parametrize("words,message", [
    (["sn=true"], "sn takes off|on|se; got 'true'"),
    (["cnn.prob=0.3"], "unknown key 'cnn.prob'; did you mean cn.prob"),
    (["dataset=npz"], "dataset.path is required for dataset=npz"),
    (["epochs=abc"], "epochs takes a whole number >= 1; got 'abc'"),
])
def test_hydra_level_mistakes_get_one_line_and_exit_2(tmp_path, words, message):
    done = snc_cmd(*words, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snc: error: "), done.stderr[-2000:]
    assert message in lines[0]
    assert "+" + words[-1] not in lines[0]  # never Hydra's '+key=' hint
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()


def test_verbose_shows_the_traceback(tmp_path):
    done = snc_cmd("sn=true", "verbose=true", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_a_shift_given_without_brackets_is_one_shift():
    from snc.eval.suite import shift_list

    assert shift_list("corrupted_bar") == ["corrupted_bar"]
    assert shift_list(["corrupted", "cifar10_1"]) == ["corrupted", "cifar10_1"]


@pytest.mark.slow  # the parsing itself: test_a_shift_given_without_brackets_is_one_shift
def test_evaluate_shift_without_brackets(make_cfg):
    results = run(make_cfg(*FAST, "epochs=1", "evaluate.shifts=corrupted_bar"))
    assert list(results["shifts"]) == ["synthetic_c_bar"]


def test_the_unknown_key_suggestion_comes_from_the_config():
    from snc.cli.launch import unknown_key

    assert "did you mean run_dir" in unknown_key("run", Path(CONFIG_DIR), "evaluate")
    assert "did you mean epochs" in unknown_key("epoch", Path(CONFIG_DIR), "train")


# ------------------------------------------------------------------ full disk


_FDOPEN = os.fdopen


class _FullAfter(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, fd, room):
        self.f, self.room = _FDOPEN(fd, "wb"), room

    def writable(self):
        return True

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        super().close()


def test_a_full_disk_names_the_folder_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FullAfter(fd, 100))
    with pytest.raises(DiskFull) as caught:
        save_checkpoint({"w": torch.zeros(10_000)}, path)
    text = str(caught.value)
    assert text.startswith(f"no space left to write last.pt in {path.parent} (")
    assert "free" in text and "paths.output_dir" in text
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1  # the old checkpoint is whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt", "prev.pt"]  # no .tmp


def test_a_full_disk_in_a_run_is_one_line_and_exit_2(capsys):
    from snc.console import fail

    with pytest.raises(SystemExit) as code:
        fail(OSError(errno.ENOSPC, "No space left on device", "/tmp/x/metrics.jsonl"))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snc: error: no space left to write metrics.jsonl in /tmp/x (")


# ------------------------------------------------------------------ folders


def test_a_failed_download_leaves_no_empty_data_folder(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    from snc.data.cifar import load_cifar

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="download failed"):
        load_cifar("cifar10", tmp_path / "no" / "such" / "dir", download=True)
    assert list(tmp_path.iterdir()) == []


def test_new_folders_keeps_a_folder_with_a_partial_download(tmp_path):
    with pytest.raises(RuntimeError):
        with new_folders(tmp_path / "a" / "b") as folder:
            (folder / "x.tar.part").write_bytes(b"half")
            raise RuntimeError("cut")
    assert (tmp_path / "a" / "b" / "x.tar.part").exists()


# ------------------------------------------------------------------ presets


def test_preset_titles_are_whole_and_an_unknown_one_exits_2(capsys):
    from snc.cli.presets import main

    assert main(["fig4"]) == 0
    out = capsys.readouterr().out
    assert ("FixMatch WRN-28-2 on CIFAR-10; clean error (EMA model: final, best, mean of the "
            "last 20 evaluations) and CIFAR-10-C mCE.") in out
    assert main(["text_demo"]) == 0
    assert "spaCy or the fallback tokenizer" in capsys.readouterr().out
    assert main(["table1_cifar100_allconv_sn"]) == 0
    assert capsys.readouterr().out.splitlines()[1].rstrip().endswith("SN, CIFAR-100")
    assert main(["nosuch"]) == 2
    assert "no preset matches 'nosuch'" in capsys.readouterr().err


def test_a_refused_sweep_leaves_no_multirun_folder(tmp_path):
    (tmp_path / "outputs" / "older").mkdir(parents=True)
    done = snc_cmd("-m", "sn=true,on", cwd=tmp_path)
    assert done.returncode == 2 and "sn takes off|on|se; got 'true'" in done.stderr
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["older"]


def test_identity_downloads_nothing_fetch_is_the_explicit_step(make_cfg, monkeypatch, tmp_path):
    import torchvision.datasets.utils as tv_utils

    from snc.tasks.classify import Classify

    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise OSError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    tiny = [o for o in __import__("conftest").TINY if not o.startswith("dataset")]
    task = Classify(make_cfg(*tiny, "dataset=cifar10", "dataset.download=true", tiny=False))
    with pytest.raises(FileNotFoundError, match="is not in"):
        task.identity()
    assert calls == []  # computing the run's identity fetched nothing
    with pytest.raises(FileNotFoundError, match="download failed"):
        task.fetch()
    assert len(calls) == 1 and calls[0].endswith("cifar-10-python.tar.gz")


def test_a_folder_that_cannot_be_written_is_one_line(capsys):
    from snc.console import fail

    with pytest.raises(SystemExit) as code:
        fail(PermissionError(errno.EACCES, "Permission denied", "/nonexistent"))
    assert code.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "snc: error: cannot access /nonexistent (permission denied): choose folders you can "
        "write (paths.data_dir=..., paths.output_dir=...) or fix their permissions")
