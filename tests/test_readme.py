"""The README and the docs are true: their Python blocks run verbatim offline, they point only
inside the repository, and the commands they show use the keys the tools take."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {p.relative_to(ROOT): p.read_text()
         for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
ALL = "\n".join(PAGES.values())
BLOCKS = [b for text in PAGES.values()
          for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]

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


def test_every_python_block_of_the_readme_and_the_docs_runs_offline(tmp_path):
    assert len(BLOCKS) >= 8
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch"),
               HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(BLOCKS), cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(BLOCKS)} blocks ran" in done.stdout


def test_the_readme_and_the_docs_point_only_inside_the_repository():
    assert "../shared" not in ALL and "shared/reference" not in ALL and "wave2.md" not in ALL
    assert "meant to go in as it is" not in ALL  # no editing note
    for page, text in PAGES.items():
        for link in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", text):
            assert (ROOT / page.parent / link.split("#")[0]).exists(), (page, link)


def test_the_readme_is_a_front_page():
    assert len(README.splitlines()) <= 250
    for heading in ("## Quickstart", "## Results", "## One command per experiment"):
        assert heading in README


def test_readme_commands_use_the_keys_the_tools_take():
    commands = re.findall(r"python -m snc\.(?:viz|evaluate)[^`\n]*", ALL)
    assert len(commands) > 5
    for command in commands:
        assert not re.search(r"(?<![\w.+])run=", command), command
    titles = re.findall(r"^#+ .*own network.*$", ALL, flags=re.M)
    assert titles == ["# SN/CN in your own network"]  # one page, docs/own-network.md


def test_the_options_table_lists_every_dataset_backbone_and_task():
    text = PAGES[Path("docs/training.md")]
    table = text[text.index("## Options (config groups)"):text.index("## Runs, resume")]
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()
            if line.startswith("| `")}
    for group in ("dataset", "backbone", "task", "sn", "cn", "augment", "objective", "logger"):
        for option in sorted((ROOT / "configs" / group).glob("*.yaml")):
            assert f"`{option.stem}`" in rows[group], (group, option.stem)
