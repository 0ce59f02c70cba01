"""Every paper preset resolves to the values it had before the engine/task split.

``tests/data/presets_golden.json`` holds each preset's resolved config (paths left out) as
composed before the split. Since then the config has changed in documented ways only, which
:func:`migrate` applies to the golden copy: the ``sn``/``cn`` groups are typed choices
(``name: on|se|off``; a switched-off group carries no fields; ``cn.crop`` mirrors the crop
group; SE's ``se_reduction`` is ``reduction``) and the engine added keys with defaults that
change nothing for these presets (``task``, ``max_steps``, ``eval_every_steps``,
``optimizer.name``, ``schedule.power``, ``wait_for_lock``, ``verbose``).

Then (ImageNet multi-GPU fidelity): ``distributed.bn_batch`` / ``distributed.augmix_bn`` (the
official run's per-GPU BatchNorm batch: the batch, times 3 with AugMix, on the one-GPU CIFAR
and ImageNet scripts; 32 for the 4-GPU consistency script; 96 rows of the 3-view batch in
DataParallel's order for the 8-GPU AugMix script; none where no official script exists), and
``paper.official`` on every CN paper preset (its run script's ``active_num``/``prob``, which
``sweep=appendix_grid`` adds to the grid as ``paper.appendix_grid`` when it lies outside).
Then (Table 1 baselines): the ``augment`` group (``augment: {name: none}`` on every preset that
does not run a Table 1 baseline: the batch goes to the objective untouched, as before); the
``table1_*_{cutout,mixup,cutmix,autoaugment,advtrain}`` presets (``override /augment:``) came
with it and are pinned by ``tests/test_make_presets.py`` and ``tests/test_augment.py``.
The ``official_*`` presets (run scripts without a paper cell) came later and are pinned by
``tests/test_make_presets.py`` and ``tests/test_ddp_fidelity.py`` instead.
Then (issue 26, the compiled step): ``compile_mode: default`` (used only with compile=true,
which no preset sets). Then (issue 27, related work): ``style: {name: none}``, left out of the
run hash at that value (``snc.engine.identity.ADDED_KEYS``), so run folders keep their names.
The ``dg_*`` presets (issue 28, domain generalization) are pinned by ``tests/test_dg.py``; the
``protocol`` group they choose is null elsewhere and adds no key.
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


GRID = [(1, 0.25), (1, 0.5), (2, 0.25), (2, 0.5)]
NO_OFFICIAL_RUN = ("imagenet_table2_standard", "table15_imagenet_resnet50_ibn_a_basic",
                   "table15_imagenet_resnet50_ibn_b_basic")


def official_bn(old: dict, name: str) -> tuple:
    """``(bn_batch, augmix_bn)`` of the official run behind preset ``name``."""
    augmix = old["augmix"]["enabled"]
    if not old.get("paper"):  # demo: no official run
        return None, "per_rank"
    if old["dataset"]["name"] != "imagenet":  # one GPU
        return old["batch_size"] * (3 if augmix else 1), "per_rank"
    if name in NO_OFFICIAL_RUN:
        return None, "per_rank"
    if augmix:  # 8 GPUs, 3 x 256 rows
        return 96, "official"
    if old["objective"]["name"] == "consistency":  # 4 GPUs x 32
        return 32, "per_rank"
    return 128, "per_rank"  # one GPU at 128


def migrate(old: dict, name: str = "") -> dict:
    new = copy.deepcopy(old)
    bn_batch, augmix_bn = official_bn(old, name)
    new["distributed"].update(bn_batch=bn_batch, augmix_bn=augmix_bn)
    if old["cn"]["enabled"] and old.get("paper"):
        official = {"active_num": old["cn"]["active_num"], "prob": old["cn"]["prob"]}
        new["paper"]["official"] = official
        point = (official["active_num"], official["prob"])
        if point not in GRID:
            new["paper"]["appendix_grid"] = ",".join(
                f"a{a}_p{round(p * 100)}" for a, p in GRID + [point])
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
    new["augment"] = {"name": "none"}
    new["compile_mode"] = "default"
    new["style"] = {"name": "none"}  # the peer style methods (issue 27): none by default
    # the shift suite (issue 22): the dataset's own corrupted set, as before, with intervals
    new["evaluate"] = {"shifts": ["corrupted"], "download": bool(old["dataset"].get("download",
                                                                                  False)),
                       "bootstrap": 1000, "bootstrap_seed": 0, "validation": "none",
                       "amp": None}  # evaluate.amp (issue 26): null = the training's amp
    if name == "demo":  # the offline demo shows every shift it can make: its -C and -C-bar
        new["evaluate"]["shifts"].append("corrupted_bar")
    return new


def test_golden_covers_every_preset():
    presets = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")
                     if "override /task:" not in p.read_text()  # classification presets
                     and not p.stem.startswith(("official_", "compare_", "dg_"))  # added later
                     and "override /augment:" not in p.read_text())  # Table 1 baselines: later
    assert sorted(GOLDEN) == presets


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_preset_resolves_to_its_golden_values(name):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    now = OmegaConf.to_container(cfg, resolve=True)
    now.pop("paths", None)
    assert now == migrate(GOLDEN[name], name)
