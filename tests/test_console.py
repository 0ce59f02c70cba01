"""The console: a short run header, one-line errors with a non-zero exit, a real --help, one
table at the end of a sweep, Hydra's sweep files under the output folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TINY = ["device=cpu", "logger=none", "progress=false", "backbone=wrn16_2",
        "+backbone.overrides.depth=10", "+backbone.overrides.widen_factor=1",
        "dataset.num_train=64", "dataset.num_test=32", "batch_size=32", "epochs=1",
        "evaluate_corruptions=false"]


def train(tmp_path, *args, env=None, check=False):
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags come before overrides
    cmd = [sys.executable, str(ROOT / "train.py"), *flags,
           f"paths.output_dir={tmp_path / 'out'}", f"paths.data_dir={tmp_path / 'data'}",
           *[a for a in args if not a.startswith("-")]]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_help_describes_every_group_and_option(tmp_path):
    out = train(tmp_path, "--help", check=True).stdout
    assert "Usage:" in out and "python -m snc.cli.presets" in out
    assert "table1_cifar10_wrn40_2_sncn," not in out  # no wall of 200 preset names
    for group in sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()):
        if group in ("experiment", "dataset_backbone", "task_dataset", "hydra", "local"):
            continue
        line_start = f"\n  {group} "
        assert line_start in out, group
        for option in sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")):
            assert f" {option} " in out or f" {option}\n" in out, f"{group}={option}"
    assert "epochs=15" in out and "batch_size=128" in out  # current values, not placeholders


def test_a_run_prints_a_short_header_not_the_config(tmp_path):
    out = train(tmp_path, *TINY, "sn=on", "cn=on", "crop=both", check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("[snc] new run: ") and "classify | synthetic | wrn16_2" in lines[1]
    assert "CN x" in lines[2] and "crop both" in lines[2]
    assert "resolved config" not in out and "eval_every_steps" not in out
    assert lines[-1].startswith("[snc] synthetic wrn16_2 sncn: clean error ")
    again = train(tmp_path, *TINY, "sn=on", "cn=on", "crop=both", check=True).stdout
    assert again.splitlines()[0].startswith("[snc] finished run: ")
    assert again.splitlines()[-1] == lines[-1]  # the same summary, no retraining
    verbose = train(tmp_path, *TINY, "seed=3", "verbose=true", check=True).stdout
    assert "resolved config" in verbose and "eval_every_steps" in verbose


@pytest.mark.parametrize("args, message", [
    (["position=after_conv", "sn=on"], "unknown position 'after_conv' for backbone wrn16_2"),
    (["dataset=npz", "dataset.path=/nonexistent.npz"], "dataset.path=/nonexistent.npz does "
                                                        "not exist"),
    (["crop=both"], "but cn=off: add cn=on"),
])
def test_configuration_errors_are_one_line_and_exit_2(tmp_path, args, message):
    base = TINY if "dataset=npz" not in args else [a for a in TINY if "dataset." not in a]
    proc = train(tmp_path, *base, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert proc.stderr.startswith("snc: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()  # and no run folder
    shown = train(tmp_path, *base, *args, env={"SNC_TRACEBACK": "1"})
    assert "Traceback" in shown.stderr and proc.returncode != 0


def test_sweep_prints_one_table_and_keeps_hydra_files_under_the_output_folder(tmp_path):
    proc = train(tmp_path, "-m", *TINY, "seed=1,2", "experiment_name=sw", check=True)
    out = proc.stdout
    assert "[snc] sweep of 2 jobs" in out
    table = out[out.index("[snc] sweep of 2 jobs"):].splitlines()
    assert table[1].split() == ["job", "overrides", "clean/error"]
    assert table[2].split()[:2] == ["0", "seed=1"] and table[3].split()[:2] == ["1", "seed=2"]
    assert not (tmp_path / "multirun.yaml").exists()
    assert list((tmp_path / "out" / "multirun").glob("*/multirun.yaml"))


def test_presets_are_listed_by_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "snc.cli.presets", "table3"], check=True,
                         capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.splitlines()[0] == "table3 (5 presets)" and "table3_sncn" in out
    everything = subprocess.run([sys.executable, "-m", "snc.cli.presets"], check=True,
                                capture_output=True, text=True, cwd=tmp_path).stdout
    headers = [line for line in everything.splitlines() if line and not line[0].isspace()]
    listed = sum(int(h.split("(")[1].split()[0]) for h in headers if "presets)" in h)
    assert listed == len(list((CONFIGS / "experiment").glob("*.yaml")))
