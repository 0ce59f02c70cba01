"""scripts/make_presets.py: the committed table*.yaml presets are exactly what it writes."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "configs" / "experiment"
MARKER = "# Written by scripts/make_presets.py: edit the generator, not this file."


def generate(out: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_presets.py"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_committed_presets_are_the_generated_ones(tmp_path):
    """A hand edit of a generated preset (or a forgotten regeneration) fails here."""
    generate(tmp_path)
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.yaml")
                 if MARKER in p.read_text()}
    assert sorted(generated) == sorted(committed)
    changed = [name for name in generated if generated[name] != committed[name]]
    assert not changed, f"regenerate with python scripts/make_presets.py: {changed}"


def test_generator_is_idempotent_and_keeps_hand_written_presets(tmp_path):
    (tmp_path / "demo.yaml").write_text("# hand-written\n")
    (tmp_path / "table99_stale.yaml").write_text(f"{MARKER}\n# no longer generated\n")
    (tmp_path / "table4_handwritten.yaml").write_text("# hand-written too\n")
    generate(tmp_path)
    first = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    generate(tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.glob("*.yaml")} == first
    assert first["demo.yaml"] == "# hand-written\n"
    assert "table99_stale.yaml" not in first
    assert first["table4_handwritten.yaml"] == "# hand-written too\n"


def test_group_choices_stay_strings():
    """``on``/``off`` are YAML 1.1 booleans: the defaults list must keep them quoted."""
    for path in COMMITTED.glob("table*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_\n"), path.name
        for entry in yaml.safe_load(text)["defaults"]:
            (value,) = entry.values()
            assert isinstance(value, str), (path.name, entry)
