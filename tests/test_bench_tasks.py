"""``scripts/bench.py task=fixmatch | segment | text`` at tiny sizes, in a subprocess.

Checks the printed lines (names, positive numbers, the last line's format); never the times.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUM = r"(\d+(?:\.\d+)?)"

COMMON = ["device=cpu", "+bench.steps=2", "+bench.warmup=1", "+bench.repeats=1",
          "+bench.workers=1", "+bench.lead=1", "+bench.rounds=2"]
TINY = {
    "fixmatch": ["dataset.num_train=200", "dataset.num_test=20", "task.labels=50",
                 "batch_size=8"],
    "segment": ["dataset.generate.source_train=4", "dataset.generate.source_val=2",
                "dataset.generate.source_test=1", "dataset.generate.target_train=1",
                "dataset.generate.target_val=2", "batch_size=2", "task.crop=33",
                "task.eval.window_batch=2", "+bench.eval_images=2"],
    "text": ["dataset.generate.train_per_class=40", "dataset.generate.test_per_class=10",
             "dataset.generate.sst_sentences=20", "batch_size=16", "eval_batch_size=32"],
}


def run_bench(task: str, tmp_path: Path) -> list:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), f"task={task}", *COMMON,
           f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}",
           *TINY[task]]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-3000:]
    return lines


def find(lines: list, pattern: str, may_be_zero: tuple = ()) -> tuple:
    """The numbers of the first line matching ``pattern``; each must be > 0, except the groups
    in ``may_be_zero`` (a spread over two timed steps can round to 0.0), which must be >= 0."""
    for line in lines:
        m = re.search(pattern, line)
        if m:
            values = tuple(float(v) for v in m.groups())
            assert all(v >= 0 if i in may_be_zero else v > 0 for i, v in enumerate(values)), line
            return values
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(lines))


def test_fixmatch_bench(tmp_path):
    lines = run_bench("fixmatch", tmp_path)
    find(lines, r"^task=fixmatch device=cpu .*images/step=24 ")
    for name in ("snc", "reference"):
        find(lines, rf"^{name}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}$", may_be_zero=(1,))
    find(lines, rf"^train steps/s: snc {NUM}, reference {NUM}$")
    assert re.fullmatch(rf"speedup_vs_reference={NUM}", lines[-1]), lines[-1]
    find(lines[-1:], rf"={NUM}$")


def test_segment_bench(tmp_path):
    lines = run_bench("segment", tmp_path)
    find(lines, r"^task=segment device=cpu .*crop=33 batch=2 ")
    for name in ("snc", "reference"):
        find(lines, rf"^{name}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}$", may_be_zero=(1,))
    find(lines, rf"^train img/s: snc {NUM}, reference {NUM}$")
    find(lines, rf"^eval img/s \(2 source val images.*centre crop 33: snc {NUM}, reference "
                rf"{NUM}; sliding window \(stride 22\) \+ flip: snc {NUM}, reference {NUM}$")
    assert re.fullmatch(rf"speedup_vs_reference={NUM}", lines[-1]), lines[-1]
    find(lines[-1:], rf"={NUM}$")


def test_text_bench(tmp_path):
    lines = run_bench("text", tmp_path)
    find(lines, r"^task=text device=cpu .*batch=16 ")
    find(lines, rf"^train: median ms {NUM} ± [\d.]+  sentences/s {NUM}$")
    find(lines, rf"^eval sentences/s \(\d+ sentences: val \+ source \+ target.*\): {NUM}$")
    find(lines, rf"^glove load \(\d+ vectors x 100\): first parse {NUM} ms, cached {NUM} ms$")
    assert re.fullmatch(rf"glove_cache_speedup={NUM}", lines[-1]), lines[-1]
    find(lines[-1:], rf"={NUM}$")


@pytest.mark.parametrize("argv, task", [(["task=segment"], "segment"),
                                        (["experiment=text_demo"], "text"),
                                        (["backbone=wrn40_2"], "classify")])
def test_task_name_dispatch(argv, task):
    from snc.cli.bench_tasks import task_name

    assert task_name(argv) == task
