"""The README is true: its Python blocks run verbatim offline, it points only inside the
repository, and the commands it shows use the keys the tools take."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)

RUNNER = r"""
import json, sys, traceback
blocks = json.loads(sys.stdin.read())
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"README block {i + 1}", "exec"), {"__name__": f"readme_{i}"})
    except Exception:
        traceback.print_exc()
        print(f"README python block {i + 1} failed:\n{code}", file=sys.stderr)
        sys.exit(1)
print(f"{len(blocks)} blocks ran")
"""


def test_every_python_block_of_the_readme_runs_offline(tmp_path):
    assert len(BLOCKS) >= 6
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch"),
               HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(BLOCKS), cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(BLOCKS)} blocks ran" in done.stdout


def test_the_readme_points_only_inside_the_repository():
    assert "../shared" not in README and "shared/reference" not in README
    assert "meant to go in as it is" not in README  # no editing note
    for link in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", README):
        assert (ROOT / link.split("#")[0]).exists(), link


def test_readme_commands_use_the_keys_the_tools_take():
    commands = re.findall(r"python -m snc\.(?:viz|evaluate)[^`\n]*", README)
    assert len(commands) > 5
    for command in commands:
        assert not re.search(r"(?<![\w.+])run=", command), command
    assert len(re.findall(r"^## SN/CN in your own network", README, flags=re.M)) == 1
    assert "own network" not in "".join(re.findall(r"^## .*$", README, flags=re.M)
                                        ).replace("## SN/CN in your own network", "")


def test_the_options_table_lists_every_dataset_backbone_and_task():
    table = README[README.index("### Options (config groups)"):README.index("### Runs, resume")]
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()
            if line.startswith("| `")}
    for group in ("dataset", "backbone", "task", "sn", "cn", "augment", "objective", "logger"):
        for option in sorted((ROOT / "configs" / group).glob("*.yaml")):
            assert f"`{option.stem}`" in rows[group], (group, option.stem)
