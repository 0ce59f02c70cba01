#!/usr/bin/env python
"""Writes configs/experiment/table*.yaml: one preset per paper experiment (and official_*.yaml:
the official run scripts that no paper table reports, e.g. the run-cnsn-consist.sh runs; and
compare_*.yaml: CN/SN beside the style methods of related work under one recipe).

Every preset also carries the per-GPU BatchNorm batch of its official run
(``distributed.bn_batch``; the header says how many GPUs and which batch) and, for CN, the
script's setting (``paper.official``) that ``sweep=appendix_grid`` adds to the grid when it
lies outside it (``paper.appendix_grid``).

Settings come from the official run scripts (tests/data/official.json, "scripts"): crop,
position, prob, active_num, consist_wt, weight decay, epochs, batch and lr per dataset, backbone
and method. Ablation presets (Tables 5-12, 14, 15) start from the official script of their
method and change the ablated setting. Every preset names the published cells it reproduces
(``paper.cells``, checked against snc/report/published.yaml by the tests).

Each preset is plain data (dicts and lists) written out by PyYAML, so quoting (``"on"``/``"off"``
stay strings, not YAML 1.1 booleans) and nesting are right by construction; only the Hydra
``# @package _global_`` line and the explanatory header are prepended as comments. Only
files carrying MARKER are (re)written: hand-written presets (demo, imagenet_table2_*, the text
task's table4_*) are left alone.

    python scripts/make_presets.py              # rewrite the presets (they are committed)
    python scripts/make_presets.py --out DIR    # write them to DIR instead (tests compare)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Union

import yaml

MARKER = "# Written by scripts/make_presets.py: edit the generator, not this file."
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "configs" / "experiment"
SCRIPTS = json.loads((ROOT / "tests" / "data" / "official.json").read_text())["scripts"]

BACKBONES = {"allconv": ("allconv", "AllConvNet"), "densenet": ("densenet40_12", "DenseNet"),
             "wideresnet": ("wrn40_2", "WideResNet"), "resnext": ("resnext29_4x32d", "ResNeXt")}
POSITIONS = {"1": "after_conv", "2": "after_norm", "3": "after_act", "conv1_pre": "layer_input",
             "conv1_post": "new_features", "pre": "pre_residual", "residual": "post_residual",
             "identity": "identity", "post": "post_addition"}
# (paper row label, our position) per backbone, in the paper's column order (Tables 9, 10, 14)
PAPER_POSITIONS = {
    "allconv": [("AllConvNet 1", "after_conv"), ("AllConvNet 2", "after_norm"),
                ("AllConvNet 3", "after_act")],
    "densenet": [("DenseNet Pre", "layer_input"), ("DenseNet Post", "new_features")],
    "wideresnet": [("WideResNet Residual", "post_residual"), ("WideResNet Post", "post_addition"),
                   ("WideResNet Pre", "pre_residual"), ("WideResNet Identity", "identity")],
    "resnext": [("ResNeXt Residual", "post_residual"), ("ResNeXt Post", "post_addition"),
                ("ResNeXt Pre", "pre_residual"), ("ResNeXt Identity", "identity")],
}


# Table 1 baselines: (preset suffix, augment option, paper column). The CNSN paper takes these
# columns from the AugMix paper's Table 1 (Hendrycks et al., ICLR 2020), whose baselines train
# with the Basic recipe plus the method; the presets are the Basic preset + the augment option.
TABLE1_BASELINES = [("cutout", "cutout", "Cutout"), ("mixup", "mixup", "Mixup"),
                    ("cutmix", "cutmix", "CutMix"), ("autoaugment", "autoaugment", "AutoAug"),
                    ("advtrain", "adversarial", "AdvTr.")]
BASELINE_NOTES = {
    "cutout": "Cutout (DeVries & Taylor 2017): one 16x16 square per image, configs/augment/"
              "cutout.yaml; the Basic recipe otherwise.",
    "mixup": "Mixup (Zhang et al. 2018), alpha 1, configs/augment/mixup.yaml; the Basic recipe "
             "otherwise.",
    "cutmix": "CutMix (Yun et al. 2019), alpha 1, prob 1, configs/augment/cutmix.yaml; the "
              "Basic recipe otherwise.",
    "autoaugment": "AutoAugment (Cubuk et al. 2019), CIFAR-10 policy, configs/augment/"
                   "autoaugment.yaml; the Basic recipe otherwise.",
    "adversarial": "PGD l_inf adversarial training, configs/augment/adversarial.yaml (epsilon, "
                   "steps: see its comment); the Basic recipe otherwise.",
}

# the paper's appendix grid; a preset whose official setting lies outside it adds that point
GRID = [(1, 0.25), (1, 0.5), (2, 0.25), (2, 0.5)]


def grid_points(official: Dict) -> str:
    """The points ``sweep=appendix_grid`` runs (options of ``configs/sweep/appendix_point``):
    the grid, then the official setting when it is not one of them."""
    points = list(dict.fromkeys(GRID + [(official["active_num"], official["prob"])]))
    names = [f"a{a}_p{round(p * 100)}" for a, p in points]
    for name in names:
        if not (ROOT / "configs" / "sweep" / "appendix_point" / f"{name}.yaml").exists():
            raise FileNotFoundError(f"add configs/sweep/appendix_point/{name}.yaml")
    return ",".join(names)


class BN:
    """The per-device BatchNorm batch of the official run (``distributed.bn_batch``).

    Args:
        gpus: GPUs of the official run (``nn.DataParallel``), None: no official run.
        batch: its batch per step.
        views: 3 for AugMix (one forward of ``cat(clean, aug1, aug2)``).
    """

    def __init__(self, gpus: Optional[int] = 1, batch: int = 128, views: int = 1) -> None:
        self.gpus, self.batch, self.views = gpus, batch, views

    @property
    def bn_batch(self) -> Union[int, str, None]:
        if self.gpus is None:
            return None
        if self.gpus == 1 and self.views == 1:
            return "${batch_size}"  # one GPU: the whole batch, whatever batch_size is
        return self.batch * self.views // self.gpus

    @property
    def launch(self) -> str:
        return "python train.py" if self.gpus in (None, 1) else \
            f"torchrun --nproc_per_node={self.gpus} train.py"

    def comment(self) -> List[str]:
        if self.gpus is None:
            return ["BatchNorm: no official run; each process normalizes its own batch "
                    "(distributed.bn_batch=null)."]
        per = self.batch * self.views // self.gpus
        rows = f"{self.batch} x {self.views} views" if self.views > 1 else str(self.batch)
        gpus = f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}"
        return [f"BatchNorm: the official run used {gpus} at batch {rows}, so BN "
                f"saw {per} rows per device (distributed.bn_batch);",
                "any torchrun size reproduces it (SyncBatchNorm over ranks, or several BN "
                "batches per rank)."]


def script(dataset: str, model: str, kind: str) -> Dict:
    name = f"{dataset}-scripts/{model + '/' if model else ''}run-{kind}.sh"
    for s in SCRIPTS:
        if s["script"] == name:
            return s
    raise KeyError(name)


def to_yaml(data: Dict, *, flow_leaves: bool) -> str:
    """YAML text of ``data`` in the given key order. ``flow_leaves`` writes innermost
    mappings/lists on one line (``cn: {active_num: 2, prob: 0.25}``, one line per paper cell);
    otherwise everything is block style (the defaults list)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None if flow_leaves else False,
                          width=10_000, allow_unicode=True)


def preset(name: str, title: str, cells: List[Dict], *, dataset: str, backbone: str,
           sn: str = "off", cn: str = "off", augmix: bool = False, position: Optional[str] = None,
           crop: Optional[str] = None, objective: Optional[str] = None,
           values: Optional[Dict] = None, extra_defaults: Optional[List[Dict]] = None,
           note: str = "", bn: Optional["BN"] = None, unpublished: str = "") -> str:
    defaults = [{"override /dataset": dataset}, {"override /backbone": backbone}]
    if sn != "off":
        defaults.append({"override /sn": sn})
    if cn != "off":
        defaults.append({"override /cn": "on"})
    if augmix:
        defaults.append({"override /augmix": "on"})
    if position:
        defaults.append({"override /position": position})
    if crop:
        defaults.append({"override /crop": crop})
    if objective:
        defaults.append({"override /objective": objective})
    defaults += extra_defaults or []
    bn = bn or BN()
    header = [title, *note.splitlines(), *bn.comment(), f"  {bn.launch} experiment={name}"]
    paper: Dict = {"cells": cells}
    if unpublished:
        paper["unpublished"] = unpublished
    cn_values = (values or {}).get("cn")
    if cn != "off":
        header.append(f"  python train.py -m experiment={name} sweep=appendix_grid   "
                      "(appendix grid)")
        official = {"active_num": (cn_values or {}).get("active_num", 1),
                    "prob": (cn_values or {}).get("prob", 0.5)}
        paper["official"] = official
        if (official["active_num"], official["prob"]) not in GRID:
            paper["appendix_grid"] = grid_points(official)
    distributed: Dict = {"bn_batch": bn.bn_batch}
    if augmix and bn.gpus not in (None, 1):
        distributed["augmix_bn"] = "official"
    body = {"experiment_name": name, "paper": paper, **(values or {}),
            "distributed": distributed}
    return ("# @package _global_\n" + MARKER + "\n" + "".join(f"# {line}\n" for line in header)
            + to_yaml({"defaults": defaults}, flow_leaves=False) + "\n"
            + to_yaml(body, flow_leaves=True))


def number(text: str) -> Union[int, float]:
    """A number from the official scripts' text ("2" -> 2, "5e-4" -> 0.0005)."""
    return int(text) if text.isdigit() else float(text)


def run_settings(s: Dict, *, with_cn: bool) -> Dict:
    """Top-level overrides from an official script row."""
    values, optimizer = {}, {}
    if float(s["wd"]) != (1e-4 if s["model"] == "densenet" else 5e-4):
        optimizer["weight_decay"] = number(s["wd"])
    if float(s["lr"]) != 0.1:
        optimizer["lr"] = s["lr"]
    if optimizer:
        values["optimizer"] = optimizer
    if s["batch_size"] != 128:
        values["batch_size"] = s["batch_size"]
    if with_cn:
        cn = {"active_num": number(s["active_num"]), "prob": number(s["cn_prob"])}
        if s.get("consist_wt"):
            cn["consist_wt"] = number(s["consist_wt"])
        values["cn"] = cn
    return values


def cell(table, row, column, dataset):
    return {"table": table, "row": row, "column": column, "dataset": dataset}


def cifar_presets() -> Dict[str, str]:
    files = {}
    for dataset in ("cifar10", "cifar100"):
        ds_label = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
        for model, (backbone, row) in BACKBONES.items():
            stem = f"{dataset}_{backbone}"
            sn_s, cn_s = script(dataset, model, "sn"), script(dataset, model, "cn")
            sncn_s, aug_s = script(dataset, model, "cnsn"), script(dataset, model, "cnsn-augmix")
            src = "official run script {}-scripts/{}/run-{}.sh"

            def t1(col, t12col, row=row, dataset=dataset):
                return [cell("table1", row, col, dataset), cell("table12", row, t12col, dataset)]

            files[f"table1_{stem}_basic"] = preset(
                f"table1_{stem}_basic", f"Paper Tables 1/12, {row}, Basic, {ds_label}",
                t1("Basic", "Basic"), dataset=dataset, backbone=backbone)
            files[f"table1_{stem}_augmix"] = preset(
                f"table1_{stem}_augmix", f"Paper Tables 1/12, {row}, AugMix, {ds_label}",
                t1("AugMix", "AugMix"), dataset=dataset, backbone=backbone, augmix=True,
                bn=BN(1, 128, views=3))
            files[f"table1_{stem}_sn"] = preset(
                f"table1_{stem}_sn", f"Paper Tables 1/12, {row}, SN, {ds_label}",
                t1("SN", "SN"), dataset=dataset, backbone=backbone, sn="on",
                position=POSITIONS[sn_s["pos"]], values=run_settings(sn_s, with_cn=False),
                note="Settings: " + src.format(dataset, model, "sn"))
            files[f"table1_{stem}_cn"] = preset(
                f"table1_{stem}_cn", f"Paper Tables 1/12, {row}, CN, {ds_label}",
                t1("CN", "CN"), dataset=dataset, backbone=backbone, cn="on",
                position=POSITIONS[cn_s["pos"]], crop=cn_s["crop"],
                values=run_settings(cn_s, with_cn=True),
                note="Settings: " + src.format(dataset, model, "cn"))
            files[f"table1_{stem}_sncn"] = preset(
                f"table1_{stem}_sncn", f"Paper Tables 1/12, {row}, SNCN (SN+CN+Crop), {ds_label}",
                t1("SNCN", "SN+CN+Crop"), dataset=dataset, backbone=backbone, sn="on",
                cn="on", position=POSITIONS[sncn_s["pos"]], crop=sncn_s["crop"],
                values=run_settings(sncn_s, with_cn=True),
                note="Settings: " + src.format(dataset, model, "cnsn"))
            files[f"table1_{stem}_sncn_augmix"] = preset(
                f"table1_{stem}_sncn_augmix",
                f"Paper Tables 1/12, {row}, SNCN+AugMix (+crop, CN consistency), {ds_label}",
                t1("SNCN+AugMix", "SNCN+Crop+Consistency+AugMix"), dataset=dataset,
                backbone=backbone, sn="on", cn="on", augmix=True,
                position=POSITIONS[aug_s["pos"]], crop=aug_s["crop"],
                values=run_settings(aug_s, with_cn=True), bn=BN(1, aug_s["batch_size"], views=3),
                note="Settings: " + src.format(dataset, model, "cnsn-augmix"))
            for suffix, option, column in TABLE1_BASELINES:
                files[f"table1_{stem}_{suffix}"] = preset(
                    f"table1_{stem}_{suffix}", f"Paper Table 1, {row}, {column}, {ds_label}",
                    [cell("table1", row, column, dataset)], dataset=dataset, backbone=backbone,
                    extra_defaults=[{"override /augment": option}],
                    note=BASELINE_NOTES[option])
            con_s = script(dataset, model, "cnsn-consist")
            files[f"official_{stem}_sncn_consistency"] = preset(
                f"official_{stem}_sncn_consistency",
                f"Official run script without a paper cell: {row}, SNCN + CN consistency, "
                f"{ds_label}", [], dataset=dataset, backbone=backbone, sn="on", cn="on",
                position=POSITIONS[con_s["pos"]], crop=con_s["crop"], objective="consistency",
                values=run_settings(con_s, with_cn=True),
                unpublished="official run script run-cnsn-consist.sh; no table reports it",
                bn=BN(1, con_s["batch_size"]),
                note="Settings: " + src.format(dataset, model, "cnsn-consist"))
            files[f"table12_{stem}_sncn_nocrop"] = preset(
                f"table12_{stem}_sncn_nocrop",
                f"Paper Table 12, {row}, SN+CN (no crop), {ds_label}",
                [cell("table12", row, "SN+CN", dataset)], dataset=dataset, backbone=backbone,
                sn="on", cn="on", position=POSITIONS[sncn_s["pos"]], crop="neither",
                values=run_settings(sncn_s, with_cn=True),
                note="Settings: " + src.format(dataset, model, "cnsn") + ", crop neither")
            for label, position in PAPER_POSITIONS[model]:
                files[f"table9_{stem}_sn_{position}"] = preset(
                    f"table9_{stem}_sn_{position}", f"Paper Table 9, SN at {label}, {ds_label}",
                    [cell("table9", label, "position", dataset)], dataset=dataset,
                    backbone=backbone, sn="on", position=position,
                    values=run_settings(sn_s, with_cn=False),
                    note="Settings: " + src.format(dataset, model, "sn") + ", position varied")
                files[f"table10_{stem}_cn_{position}"] = preset(
                    f"table10_{stem}_cn_{position}", f"Paper Table 10, CN at {label}, {ds_label}",
                    [cell("table10", label, "position", dataset)], dataset=dataset,
                    backbone=backbone, cn="on", position=position, crop=cn_s["crop"],
                    values=run_settings(cn_s, with_cn=True),
                    note="Settings: " + src.format(dataset, model, "cn") + ", position varied")
            for crop, column in (("neither", "Neither"), ("content", "Content"),
                                 ("style", "Style"), ("both", "Both")):
                files[f"table11_{stem}_sncn_{crop}"] = preset(
                    f"table11_{stem}_sncn_{crop}", f"Paper Table 11, {row}, SNCN crop {crop}, "
                    f"{ds_label}", [cell("table11", row, column, dataset)], dataset=dataset,
                    backbone=backbone, sn="on", cn="on", position=POSITIONS[sncn_s["pos"]],
                    crop=crop, values=run_settings(sncn_s, with_cn=True),
                    note="Settings: " + src.format(dataset, model, "cnsn") + ", crop varied")
    # WRN-40-2 / CIFAR-100 ablations (Tables 5-8)
    ds, bb, model = "cifar100", "wrn40_2", "wideresnet"
    sn_s, cn_s, sncn_s = (script(ds, model, k) for k in ("sn", "cn", "cnsn"))
    stem = f"{ds}_{bb}"
    for mode, mlabel in (("one_instance", "1-instance"), ("two_instance", "2-instance")):
        for crop in ("neither", "content", "style", "both"):
            name = f"table5_{stem}_cn_{mode}_{crop}"
            values = run_settings(cn_s, with_cn=True)
            values["cn"]["mode"] = mode
            files[name] = preset(
                name, f"Paper Table 5, CN {mlabel}, crop {crop}, WRN-40-2, CIFAR-100",
                [cell("table5", "WideResNet", f"{mlabel} {crop.capitalize()}", ds)], dataset=ds,
                backbone=bb, cn="on", position="post_addition", crop=crop, values=values,
                note="Settings: official cifar100-scripts/wideresnet/run-cn.sh, mode/crop varied")
    for op, op_s in (("sn", sn_s), ("cn", cn_s)):
        files[f"table6_{stem}_basic_for_{op}"] = preset(
            f"table6_{stem}_basic_for_{op}", f"Paper Table 6, {op.upper()} row, N/A (no units)",
            [cell("table6", op.upper(), "N/A", ds)], dataset=ds, backbone=bb)
        for tag, blocks, column in (("image", "image", "Image"), ("block1", [1], "Block 1"),
                                    ("block2", [2], "Block 2"), ("block3", [3], "Block 3"),
                                    ("all", "all", "All")):
            values = run_settings(op_s, with_cn=op == "cn")
            if isinstance(blocks, list):
                values["position"] = {"blocks": blocks}
            if blocks == "image" and op == "cn":
                values["cn"] = {"active_num": 1, "prob": number(op_s["cn_prob"])}
            files[f"table6_{stem}_{op}_{tag}"] = preset(
                f"table6_{stem}_{op}_{tag}", f"Paper Table 6, {op.upper()} in {column}, WRN-40-2, "
                "CIFAR-100", [cell("table6", op.upper(), column, ds)], dataset=ds, backbone=bb,
                sn="on" if op == "sn" else "off", cn="on" if op == "cn" else "off",
                position="image" if blocks == "image" else "post_addition",
                crop=op_s["crop"] if op == "cn" else None, values=values,
                note=f"Settings: official cifar100-scripts/wideresnet/run-{op}.sh, blocks varied")
    for order, column in (("sn_cn", "SN->CN"), ("cn_sn", "CN->SN")):
        values = run_settings(sncn_s, with_cn=True)
        values["cn"]["order"] = order
        files[f"table7_{stem}_sncn_{order}"] = preset(
            f"table7_{stem}_sncn_{order}", f"Paper Table 7, order {column}, WRN-40-2, CIFAR-100",
            [cell("table7", "WideResNet", column, ds)], dataset=ds, backbone=bb, sn="on",
            cn="on", position="post_addition", crop=sncn_s["crop"], values=values,
            note="Settings: official cifar100-scripts/wideresnet/run-cnsn.sh, order varied")
    files[f"table8_{stem}_basic"] = preset(
        f"table8_{stem}_basic", "Paper Table 8, Basic, WRN-40-2, CIFAR-100",
        [cell("table8", "WideResNet", "Basic", ds)], dataset=ds, backbone=bb)
    files[f"table8_{stem}_se"] = preset(
        f"table8_{stem}_se", "Paper Table 8, SE (standard SE place: the residual branch)",
        [cell("table8", "WideResNet", "SE", ds)], dataset=ds, backbone=bb, sn="se",
        position="post_residual")
    files[f"table8_{stem}_se_post_addition"] = preset(
        f"table8_{stem}_se_post_addition", "Paper Table 8, SE at post-addition",
        [cell("table8", "WideResNet", "SE(post-addition)", ds)], dataset=ds, backbone=bb,
        sn="se", position="post_addition")
    files[f"table8_{stem}_sn"] = preset(
        f"table8_{stem}_sn", "Paper Table 8, SN at post-addition",
        [cell("table8", "WideResNet", "SN", ds)], dataset=ds, backbone=bb, sn="on",
        position="post_addition")
    return files


AUGMIX_NOTE = ("; distributed.augmix_bn=official lays the views of all ranks out as the\n"
               "DataParallel batch cat(clean, aug1, aug2): most BN batches hold one view and "
               "the running\nstatistics come from the clean rows (augmix_bn=per_rank: each "
               "rank mixes its 3 views)")


def imagenet_presets() -> Dict[str, str]:
    files = {}
    ds, bb = "imagenet", "resnet50"
    note = "Settings: official ImageNet scripts (imagenet-scripts/run-*.sh) and Table 14/15 text"
    labels = {"identity": "Identity", "pre_residual": "Pre-Residual",
              "post_residual": "Post-Residual", "post_addition": "Post-Addition"}
    for position, label in labels.items():
        files[f"table14_imagenet_resnet50_sn_{position}"] = preset(
            f"table14_imagenet_resnet50_sn_{position}", f"Paper Table 14, SN at {label}",
            [cell("table14", f"SN {label}", c, ds) for c in ("Clean", "mCE")],
            dataset=ds, backbone=bb, sn="on", position=position, values={"batch_size": 128},
            note=note, bn=BN(1, 128))
        files[f"table14_imagenet_resnet50_cn_{position}"] = preset(
            f"table14_imagenet_resnet50_cn_{position}",
            f"Paper Table 14, in-network CN at {label} (no official script: run-cn.sh settings)",
            [cell("table14", f"CN {label}", c, ds) for c in ("Clean", "mCE")],
            dataset=ds, backbone=bb, cn="on", position=position, crop="both",
            values={"batch_size": 128, "cn": {"active_num": 1, "prob": 0.5}}, note=note,
            bn=BN(1, 128))
    ibn_a = [{"override /ibn": "a"}]
    files["table15_imagenet_resnet50_ibn_a_basic"] = preset(
        "table15_imagenet_resnet50_ibn_a_basic", "Paper Table 15, ResNet-50 IBN-a, Basic",
        [cell("table15", "IBN(a) Basic", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, extra_defaults=ibn_a, bn=BN(None))
    files["table15_imagenet_resnet50_ibn_a_cn"] = preset(
        "table15_imagenet_resnet50_ibn_a_cn", "Paper Table 15, IBN-a + image CN",
        [cell("table15", "IBN(a) +CN", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, cn="on", position="image", crop="both", extra_defaults=ibn_a,
        values={"batch_size": 128, "cn": {"prob": 0.5}}, note=note, bn=BN(1, 128))
    files["table15_imagenet_resnet50_ibn_a_cn_consistency"] = preset(
        "table15_imagenet_resnet50_ibn_a_cn_consistency",
        "Paper Table 15, IBN-a + image CN + consistency (CR)",
        [cell("table15", "IBN(a) +CN+CR", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, cn="on", position="image", crop="both", objective="consistency",
        extra_defaults=ibn_a, values={"batch_size": 128, "cn": {"prob": 0.5, "consist_wt": 10}},
        note=note + "\nrun-cnsn-consist.sh settings: 4 GPUs at batch 128", bn=BN(4, 128))
    files["table15_imagenet_resnet50_ibn_a_cn_augmix"] = preset(
        "table15_imagenet_resnet50_ibn_a_cn_augmix", "Paper Table 15, IBN-a + image CN + AugMix",
        [cell("table15", "IBN(a) +CN+AM", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, cn="on", augmix=True, position="image", crop="neither",
        extra_defaults=ibn_a, values={"batch_size": 256,
                                      "cn": {"prob": 0.5, "augmix_joint": True}},
        note=note + "\nrun-cnsn-augmix.sh settings: 8 GPUs at batch 256" + AUGMIX_NOTE,
        bn=BN(8, 256, views=3))
    ibn_b = [{"override /ibn": "b"}]
    files["table15_imagenet_resnet50_ibn_b_basic"] = preset(
        "table15_imagenet_resnet50_ibn_b_basic", "Paper Table 15, ResNet-50 IBN-b, Basic",
        [cell("table15", "IBN(b) Basic", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, extra_defaults=ibn_b, bn=BN(None))
    files["table15_imagenet_resnet50_ibn_b_sn"] = preset(
        "table15_imagenet_resnet50_ibn_b_sn", "Paper Table 15, IBN-b + SN (post_residual)",
        [cell("table15", "IBN(b) +SN", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, sn="on", position="post_residual", extra_defaults=ibn_b,
        values={"batch_size": 128}, note=note, bn=BN(1, 128))
    files["table15_imagenet_resnet50_ibn_b_sn_augmix"] = preset(
        "table15_imagenet_resnet50_ibn_b_sn_augmix", "Paper Table 15, IBN-b + SN + AugMix",
        [cell("table15", "IBN(b) +SN+AM", c, ds) for c in ("Clean", "mCE")], dataset=ds,
        backbone=bb, sn="on", augmix=True, position="post_residual", extra_defaults=ibn_b,
        values={"batch_size": 256},
        note=note + "\nrun-cnsn-augmix.sh settings: 8 GPUs at batch 256" + AUGMIX_NOTE,
        bn=BN(8, 256, views=3))
    con = script("imagenet", "", "cnsn-consist")
    files["official_imagenet_resnet50_sncn_consistency"] = preset(
        "official_imagenet_resnet50_sncn_consistency",
        "Official run script without a paper cell: ResNet-50, SN at post_addition + image CN "
        "(crop both) + consistency", [], dataset=ds, backbone=bb, sn="on", cn="on",
        crop=con["crop"], objective="consistency",
        values={"batch_size": con["batch_size"],
                "position": {"sn": POSITIONS[con["pos"]], "cn": "image"},
                "cn": {"active_num": 1, "prob": number(con["cn_prob"]),
                       "consist_wt": number(con["consist_wt"])}},
        unpublished="official imagenet-scripts/run-cnsn-consist.sh; no table reports it",
        note="Settings: official imagenet-scripts/run-cnsn-consist.sh (4 GPUs at batch 128,\n"
             "consist_wt 10: CE(clean) + 10 JSD(clean, CN1, CN2), CN on the input image)",
        bn=BN(4, con["batch_size"]))
    return files


STYLE_METHODS = ("mixstyle", "dsu", "efdmix", "padain")
COMPARE_BACKBONES = ("wideresnet", "resnext")
# The stage-level sites the authors' ResNets use, on the 3-stage CIFAR networks: MixStyle and
# EFDMix after every stage but the last (Dassl resnet.py featuremaps, *_l123 of a 4-stage
# ResNet), DSU after every stage (uresnet.py; its stem site has no counterpart here). pAdaIN
# sits after every convolution of every block, a site these backbones do not offer.
PAPER_STAGES = {"mixstyle": [1, 2], "efdmix": [1, 2], "dsu": "all"}


def compare_presets() -> Dict[str, str]:
    """``compare_<dataset>_<backbone>_<method>``: CrossNorm, SelfNorm and the style methods of
    related work under one recipe. Every method sits at CrossNorm's position of the official CN
    script (SelfNorm at SN's) with the CN script's optimizer and batch; CN keeps its script's
    ``active_num``/``prob``, the style methods their papers' defaults. No published cell."""
    files = {}
    for dataset in ("cifar10", "cifar100"):
        ds_label = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
        for model in COMPARE_BACKBONES:
            backbone, row = BACKBONES[model]
            sn_s, cn_s = script(dataset, model, "sn"), script(dataset, model, "cn")
            sncn_s = script(dataset, model, "cnsn")
            cn_pos, sn_pos = POSITIONS[cn_s["pos"]], POSITIONS[sn_s["pos"]]
            recipe = run_settings(cn_s, with_cn=False)
            src = f"official run script {dataset}-scripts/{model}/run-cn.sh"
            methods = {
                "basic": {},
                "sn": dict(sn="on", position=sn_pos, values=run_settings(sn_s, with_cn=False)),
                "cn": dict(cn="on", position=cn_pos, crop=cn_s["crop"],
                           values=run_settings(cn_s, with_cn=True)),
                "sncn": dict(sn="on", cn="on", position=POSITIONS[sncn_s["pos"]],
                             crop=sncn_s["crop"], values=run_settings(sncn_s, with_cn=True)),
                **{m: dict(position=cn_pos, values=recipe,
                           extra_defaults=[{"override /style": m}]) for m in STYLE_METHODS},
                **{f"{m}_paper": dict(position="stage_output",
                                      values={**recipe, "position": {"blocks": blocks}},
                                      extra_defaults=[{"override /style": m}])
                   for m, blocks in PAPER_STAGES.items()},
            }
            group = f"compare_{dataset}_{backbone}"  # one folder and W&B group: one report
            for method, kw in methods.items():
                name = f"{group}_{method}"
                kw["values"] = {"experiment_name": group, **kw.get("values", {})}
                where = ("Position: after the stages, as in its authors' ResNets; recipe: "
                         if method.endswith("_paper") else "Position and recipe: ")
                files[name] = preset(
                    name, f"Method comparison, {row}, {method}"
                    f"{' (its paper: stage outputs)' if method.endswith('_paper') else ''}, "
                    f"{ds_label}", [],
                    dataset=dataset, backbone=backbone,
                    unpublished="method comparison: no published cell",
                    note=(f"{where}CrossNorm's, from the {src}\n"
                          f"  python train.py -m 'experiment=glob({group}_*)' "
                          "sweep=style_methods   (every method x 3 seeds)\n"
                          f"  python scripts/report.py outputs/{group}"), **kw)
    return files


DG_DATASETS = {  # dataset -> (first test domain, title)
    "pacs": ("art_painting", "PACS"), "office_home": ("Art", "OfficeHome"),
    "vlcs": ("Caltech101", "VLCS"), "terra_incognita": ("location_100", "TerraIncognita"),
    "domain_net": ("clipart", "DomainNet"),
}
DG_PROTOCOLS = {  # protocol -> (datasets, backbone text)
    "dassl": (("pacs", "office_home"), "ImageNet ResNet-18"),
    "domainbed": (tuple(DG_DATASETS), "ImageNet ResNet-50, BatchNorm frozen"),
}
# Where each method goes in a torchvision ResNet: SN/CN as the paper's ImageNet ResNet-50
# (official imagenet run-cnsn.sh: SN at post_addition, CN on the input image, crop neither,
# prob 0.5); MixStyle and EFDMix after layer1-3 (Dassl's ResNet; EFDM's scripts), DSU after
# every stage (DSU's uresnet.py; its stem site is not offered), pAdaIN at CrossNorm's
# post_addition of every block (its authors put it after every convolution).
DG_METHODS = {
    "erm": {},
    "sn": {"sn": "on", "position": {"sn": "post_addition"}},
    "cn": {"cn": "on", "crop": "neither", "position": {"cn": "image"}, "cn_values": {"prob": 0.5}},
    "sncn": {"sn": "on", "cn": "on", "crop": "neither",
             "position": {"sn": "post_addition", "cn": "image"}, "cn_values": {"prob": 0.5}},
    "mixstyle": {"style": "mixstyle", "group": "stage_output", "position": {"blocks": [1, 2, 3]}},
    "dsu": {"style": "dsu", "group": "stage_output", "position": {"blocks": "all"}},
    "efdmix": {"style": "efdmix", "group": "stage_output", "position": {"blocks": [1, 2, 3]}},
    "padain": {"style": "padain", "position": {"cn": "post_addition"}},
}


def dg_presets() -> Dict[str, str]:
    """``dg_<protocol>_<dataset>_<method>``: domain generalization under the Dassl (ResNet-18;
    PACS, OfficeHome) and DomainBed (ResNet-50; all five sets) protocols, one method each; a
    protocol and dataset share one folder and W&B group (one report)."""
    files = {}
    for protocol, (datasets, backbone) in DG_PROTOCOLS.items():
        for dataset in datasets:
            first, title = DG_DATASETS[dataset]
            group = f"dg_{protocol}_{dataset}"
            for method, spec in DG_METHODS.items():
                name = f"{group}_{method}"
                defaults: List[Dict] = [{"override /protocol": protocol},
                                        {"override /dataset": dataset}]
                for key in ("sn", "cn", "crop", "style"):
                    if key in spec:
                        defaults.append({f"override /{key}": spec[key]})
                if "group" in spec:
                    defaults.append({"override /position": spec["group"]})
                body: Dict = {"experiment_name": group, "dataset": {"test_domain": first}}
                if "position" in spec:
                    body["position"] = spec["position"]
                if "cn_values" in spec:
                    body["cn"] = spec["cn_values"]
                sweep = "dg_hparams" if protocol == "domainbed" else "dg_domains"
                header = [f"Domain generalization, {title}, {method}, {protocol} protocol "
                          f"({backbone})",
                          f"  python train.py experiment={name} dataset.test_domain={first}",
                          f"  python train.py -m 'experiment=glob({group}_*)' sweep=dg_domains"
                          "   (every method, test domain and seed)"]
                if protocol == "domainbed":
                    header.append(f"  python train.py -m experiment={name} sweep={sweep}"
                                  "   (DomainBed's random search)")
                header.append(f"  python scripts/report.py outputs/{group}")
                files[name] = ("# @package _global_\n" + MARKER + "\n"
                               + "".join(f"# {line}\n" for line in header)
                               + to_yaml({"defaults": defaults}, flow_leaves=False) + "\n"
                               + to_yaml(body, flow_leaves=True))
    return files


def is_generated(path: Path) -> bool:
    """Whether ``path`` was written by this script (it carries :data:`MARKER`)."""
    return MARKER in path.read_text()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"folder to write the presets to (default: {OUT})")
    out = parser.parse_args(argv).out
    files = {**cifar_presets(), **imagenet_presets(), **compare_presets(), **dg_presets()}
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):  # stale generated presets; hand-written ones stay
        if is_generated(old):
            old.unlink()
    for name, text in sorted(files.items()):
        (out / f"{name}.yaml").write_text(text)
    print(f"wrote {len(files)} presets to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
