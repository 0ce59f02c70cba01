"""The rules of the house that imports can show: the engine knows no paper concept."""

import ast
from pathlib import Path

SNC = Path(__file__).resolve().parents[1] / "snc"
PAPER = ("snc.ops", "snc.models", "snc.data", "snc.config")


def imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            if node.module == "snc":  # from snc import reference
                yield from (f"snc.{alias.name}" for alias in node.names)


def test_the_engine_imports_nothing_of_the_paper():
    found = {f"{path.name}: {name}" for path in sorted((SNC / "engine").glob("*.py"))
             for name in imports_of(path) if name.startswith(PAPER)}
    assert found == set()


def test_the_ops_import_only_torch_and_numpy():
    for path in sorted((SNC / "ops").glob("*.py")):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top in ("torch", "numpy", "snc", "__future__", "math", "dataclasses",
                           "typing", "contextlib", "functools", "itertools"), (path.name, name)
            if top == "snc":
                assert name.startswith("snc.ops"), (path.name, name)


def test_snc_imports_nothing_of_the_reference_pipelines():
    """The reference pipelines depend on snc, never the other way round."""
    found = {f"{path.relative_to(SNC)}: {name}"
             for package in ("augment", "engine", "tasks", "models", "ops")
             for path in sorted((SNC / package).rglob("*.py"))
             for name in imports_of(path) if name == "snc.reference"
             or name.startswith("snc.reference.")}
    assert found == set()


def test_arrows_run_down_to_the_engine_not_up_from_it():
    """Metrics, ops, models and data serve the engine and tasks; none of them imports
    ``snc.engine`` or ``snc.tasks``."""
    found = {f"{path.relative_to(SNC)}: {name}"
             for package in ("eval", "ops", "models", "data", "corruptions", "shifts", "augment")
             for path in sorted((SNC / package).rglob("*.py"))
             for name in imports_of(path) if name.startswith(("snc.engine", "snc.tasks"))}
    assert found == set()
