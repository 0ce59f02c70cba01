"""The unit options' one path: parsed once per run, one label, one controller constructor."""

import ast
from pathlib import Path

import pytest

import snc.config
from snc.config import unit_label
from snc.engine import run
from snc.engine.runner import validate
from snc.ops import CrossNormOptions, SelfNormOptions, SqueezeExcitationOptions

SNC = Path(__file__).resolve().parents[1] / "snc"
FIXMATCH = ["task=fixmatch", "backbone=wrn28_2_fm", "dataset.num_train=120",
            "dataset.num_test=40", "task.labels=20", "batch_size=8", "task.mu=2",
            "dataset.corrupted=none"]


@pytest.mark.parametrize("sn,cn,label", [
    (None, None, "basic"), (SelfNormOptions(), None, "sn"),
    (SqueezeExcitationOptions(), None, "se"), (None, CrossNormOptions(), "cn"),
    (SelfNormOptions(gates=2), CrossNormOptions(), "sncn"),
    (SqueezeExcitationOptions(), CrossNormOptions(), "secn")])
def test_one_label_for_the_units(sn, cn, label):
    assert unit_label(sn, cn) == label


@pytest.fixture
def parses(monkeypatch):
    """Counts the conversions of the cn group into options."""
    calls = {"n": 0}
    real = snc.config.cn_options

    def counting(cfg):
        calls["n"] += 1
        return real(cfg)

    monkeypatch.setattr(snc.config, "cn_options", counting)
    return calls


def test_a_classification_run_parses_its_unit_options_once(make_cfg, parses, caplog):
    cfg = make_cfg('sn="on"', 'cn="on"', "crop=both", "epochs=1", "cn.active_num=2")
    with caplog.at_level("INFO", logger="snc"):
        results = run(cfg)
    assert parses["n"] == 1
    assert results["method"] == "sncn" and results["crop"] == "both"
    n = results["sn_units"]
    assert n > 0 and f"SN x{n} (gates 1), CN x{results['cn_units']} (two_instance, crop both, " \
        "active_num 2, prob 0.5)" in caplog.text


@pytest.mark.parametrize("extra", [(), ('sn="on"',), ('sn=se',), ('cn="on"',)])
def test_fixmatch_parses_once_and_labels_like_every_task(make_cfg, parses, extra):
    task = validate(make_cfg(*FIXMATCH, *extra))
    assert parses["n"] == 1
    expected = {(): "basic", ('sn="on"',): "sn", ("sn=se",): "se", ('cn="on"',): "cn"}[extra]
    assert task.method() == expected  # sn=se was once labelled "sn"
    assert task.units.label == expected
    if expected == "se":
        assert "-se" in task.run_name() and "-sn" not in task.run_name()


def test_a_model_without_cn_gets_a_controller_that_never_fires(make_cfg):
    task = validate(make_cfg())
    ctrl = task.build_model(pretrained=False).cn_controller
    assert len(ctrl) == 0 and ctrl.prob == 0.0 and ctrl.draw() is False


def test_the_controller_has_one_constructor_and_the_options_one_parser():
    """``CrossNormController(`` is called in one place of the package (the models' registry)
    and ``unit_options(`` only where a run's options are parsed (the task base), by the
    figures' network loader and by build_network's fallback for callers without a run."""
    calls = {}
    for path in SNC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in ("CrossNormController", "unit_options"):
                    calls.setdefault(name, set()).add(str(path.relative_to(SNC)))
    assert calls["CrossNormController"] == {"models/registry.py"}
    assert calls["unit_options"] == {"tasks/base.py", "tasks/classify.py", "viz/model.py"}
