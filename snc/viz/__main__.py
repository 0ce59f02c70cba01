"""``python -m snc.viz <figure> run_dir=<run dir> [key=value ...]``: the paper's figures as PNGs.

Figures: image_cn (Fig. 1a, 13), image_sn (Fig. 1b), cn_inversion (Figs 5, 10),
sn_off_inversion (Fig. 6), sn_accumulated (Fig. 7). Options are ``key=value`` words as in
train.py (lists as ``styles=[1,2,3]``); ``python -m snc.viz --help`` lists them. The PNG goes to
``<run>/figures/`` unless ``out=`` says otherwise. See docs/figures.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from snc.errors import ConfigError

FIGURES = ("image_cn", "image_sn", "cn_inversion", "sn_off_inversion", "sn_accumulated")

COMMON = {
    "run_dir": None,      # a finished run directory (config.yaml + ckpt/last.pt); run= too
    "checkpoint": None,   # another checkpoint file for run's config, or with backbone=
    "backbone": None,     # instead of run: a backbone name (+ checkpoint, model overrides)
    "model": [],          # train.py overrides for backbone= (e.g. [sn=on,dataset=cifar10])
    "out": None,          # output folder (default: <run>/figures)
    "images": None,       # images instead of the run's dataset: an .npz or a,b,c.png
    "split": None,        # train | test (default: train for CN figures, test for SN ones)
    "device": "cpu",
    "scale": 4,           # nearest-neighbour upscaling of each tile
    "seed": 0,
}
INVERSION = {
    "locations": None, "position": None, "iterations": 200, "lr": 1e4, "momentum": 0.9,
    "decay_every": 40, "schedule": "paper", "tv": "mv", "l2_weight": 1.0, "clamp": True,
}
OPTIONS: Dict[str, Dict[str, Any]] = {
    "image_cn": {"pairs": [[0, 1], [2, 3], [4, 5]], "crops": 3, "threshold": 0.1},
    "image_sn": {"index": [0, 1, 2, 3, 4, 5, 6, 7]},
    "cn_inversion": {"content": 0, "styles": [1, 2, 3, 4], **INVERSION},
    "sn_off_inversion": {"index": [0, 1, 2, 3], **INVERSION},
    "sn_accumulated": {"index": [0, 1, 2], "plain": None, **INVERSION},
}


def parse(argv: Sequence[str]):
    """``(figure, options)`` of a command line; unknown figures or keys fail naming the
    valid ones."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    figure, words = argv[0], list(argv[1:])
    if figure not in FIGURES:
        raise ConfigError(f"unknown figure {figure!r}; choose one of {', '.join(FIGURES)}")
    bad = [w for w in words if "=" not in w]
    if bad:
        raise ConfigError(f"options are key=value words; got {bad}")
    given = OmegaConf.to_container(OmegaConf.from_dotlist(words), resolve=True)
    if "run" in given:  # the name snc.evaluate and train.py use is run_dir; run= still works
        if "run_dir" in given:
            raise ConfigError("give run_dir= (or its short form run=), not both")
        given["run_dir"] = given.pop("run")
    valid = {**COMMON, **OPTIONS[figure]}
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {figure}; valid: "
                          f"{', '.join(sorted(valid))}")
    return figure, {**valid, **given}


def usage() -> str:
    lines = [__doc__.strip(), "", "options of every figure: " + ", ".join(COMMON)]
    for name in FIGURES:
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in OPTIONS[name].items()))
    return "\n".join(lines)


def _network(o: Dict[str, Any], run_key: str = "run_dir"):
    from snc.viz.model import load_run, network_from_backbone

    if o.get(run_key):
        return load_run(o[run_key], o["device"], o["checkpoint"] if run_key == "run_dir" else None)
    if run_key == "run_dir" and o.get("backbone"):
        return network_from_backbone(o["backbone"], o["checkpoint"],
                                     overrides=list(o["model"] or []), device=o["device"])
    raise ConfigError(f"give {run_key}=<run dir> (a finished train.py run"
                      + (", or backbone=<name> checkpoint=<file.pt>)" if run_key == "run_dir"
                         else ", the plain model to compare with)"))


def _images(o: Dict[str, Any], net, split: str) -> np.ndarray:
    from snc.viz.image import load_images

    if o.get("images"):
        return load_images(str(o["images"]))
    if net is None or net.cfg is None:
        raise ConfigError("give images=<file.npz or a.png,b.png> or run_dir=<run dir> "
                          "(its dataset)")
    from snc.data.datasets import load_arrays

    split = o.get("split") or split
    if split not in ("train", "test"):
        raise ConfigError(f"split={split!r}: use train or test")
    train_x, _, test_x, _ = load_arrays(net.cfg, Path(net.cfg.paths.data_dir))
    return np.asarray(train_x if split == "train" else test_x)


def _out(o: Dict[str, Any], net) -> Path:
    if o.get("out"):
        return Path(o["out"])
    if net is not None and net.run_dir is not None:
        return net.run_dir / "figures"
    raise ConfigError("give out=<folder> for the PNG (there is no run directory)")


def _inversion_options(o: Dict[str, Any]):
    from snc.viz.inversion import InversionOptions

    return InversionOptions(lr=float(o["lr"]), momentum=float(o["momentum"]),
                            iterations=int(o["iterations"]), decay_every=int(o["decay_every"]),
                            schedule=o["schedule"], tv=o["tv"], l2_weight=float(o["l2_weight"]))


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Runs one figure; returns the PNG path."""
    from snc.viz import figures as F

    figure, o = parse(list(sys.argv[1:] if argv is None else argv))
    if figure == "image_cn":
        net = _network(o) if (o.get("run_dir") or o.get("backbone")) else None
        images = _images(o, net, "train")
        pairs = [tuple(int(i) for i in p) for p in o["pairs"]]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"pairs={o['pairs']}: give [content, style] pairs, e.g. "
                              "pairs=[[0,1],[2,3]]")
        return F.image_cn(images, _out(o, net), pairs=pairs, crops=int(o["crops"]),
                          threshold=float(o["threshold"]), seed=int(o["seed"]),
                          scale=int(o["scale"]))
    net = _network(o)
    out = _out(o, net)
    if figure == "image_sn":
        images = _images(o, net, "test")
        return F.image_sn(net, F._pick(images, o["index"], "index"), out, scale=int(o["scale"]))
    inv = _inversion_options(o)
    common = dict(opts=inv, clamp=bool(o["clamp"]), scale=int(o["scale"]),
                  position=o["position"])
    locations: Optional[List[str]] = o["locations"]
    if locations is not None:
        locations = [str(v) for v in (locations if isinstance(locations, list) else [locations])]
        common["locations"] = locations
    if figure == "cn_inversion":
        images = _images(o, net, "train")
        return F.cn_inversion(net, images, out, content=int(o["content"]),
                              styles=[int(i) for i in o["styles"]], **common)
    images = _images(o, net, "test")
    picked = F._pick(images, o["index"], "index")
    if figure == "sn_off_inversion":
        return F.sn_off_inversion(net, picked, out, **common)
    F.require_sn(net, "sn_accumulated")
    plain = _network(o, "plain")
    return F.sn_accumulated(net, plain, picked, out, seed=int(o["seed"]), **common)


def cli() -> None:
    from snc import console

    try:
        path = main()
    except Exception as err:  # expected errors in one line, anything else re-raised
        console.fail(err)
        return
    print(f"wrote {path}")


if __name__ == "__main__":
    cli()
