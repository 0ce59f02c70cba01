"""Every paper preset resolves to the values it had before the engine/task split.

``tests/data/presets_golden.json`` holds each preset's resolved config (paths left out) as
composed before the split. Since then the config has changed in documented ways only, which
:func:`migrate` applies to the golden copy: the ``sn``/``cn`` groups are typed choices
(``name: on|se|off``; a switched-off group carries no fields; ``cn.crop`` mirrors the crop
group; SE's ``se_reduction`` is ``reduction``) and the engine added keys with defaults that
change nothing for these presets (``task``, ``max_steps``, ``eval_every_steps``,
``optimizer.name``, ``schedule.power``, ``wait_for_lock``, ``verbose``).
"""

import copy
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import snc.config  # noqa: F401  (registers the config schemas)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "data" / "presets_golden.json").read_text())


def migrate(old: dict) -> dict:
    new = copy.deepcopy(old)
    sn = new.pop("sn")
    if not sn["enabled"]:
        new["sn"] = {"name": "off"}
    elif sn["attention"] == "se":
        new["sn"] = {"name": "se", "reduction": sn["se_reduction"]}
    else:
        new["sn"] = {"name": "on", "gates": sn["gates"]}
    cn = new.pop("cn")
    if not cn.pop("enabled"):
        new["cn"] = {"name": "off"}
    else:
        new["cn"] = {"name": "on", "crop": new["crop"]["name"], **cn}
    new["task"] = {"name": "classify"}
    new.update(max_steps=None, eval_every_steps=1024, wait_for_lock=False, verbose=False)
    new["optimizer"]["name"] = "sgd"
    new["schedule"]["power"] = 0.9
    return new


def test_golden_covers_every_preset():
    presets = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")
                     if "override /task:" not in p.read_text())  # classification presets
    assert sorted(GOLDEN) == presets


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_preset_resolves_to_its_golden_values(name):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    now = OmegaConf.to_container(cfg, resolve=True)
    now.pop("paths", None)
    assert now == migrate(GOLDEN[name])
