"""A generated street-scene dataset with a domain shift, in the GTA5 and Cityscapes layouts.

Offline stand-in for GTA5 -> Cityscapes (paper Table 3) that drives the tests and the
``segment_demo`` experiment. Each scene is a random 19-class street layout drawn in label space
(Cityscapes labelIds): sky above a horizon, buildings, walls and vegetation along it, a road in
perspective with sidewalks, terrain and fences, poles carrying traffic lights and signs, and
vehicles, persons, riders and two-wheelers on the road; a few pixels get ignored labelIds
(ego vehicle, static). One layout distribution, two renderings:

- ``source`` ("game"): each class in a flat colour near its Cityscapes palette colour, a mild
  per-image channel gain/bias, smooth shading, little noise; written as ``images/NNNNN.png``,
  ``labels/NNNNN.png`` (palette PNGs of labelIds) and ``split.mat``;
- ``target`` ("real"): the same class colours through a fixed per-channel gain and offset far
  outside the source's range, lower contrast, a per-image colour cast and texture noise;
  written as ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
  ``gtFine/<split>/<city>/*_gtFine_labelIds.png``.

The content (layout, shapes, context) is shared and the style (channel statistics, texture)
shifts, which is the kind of shift CrossNorm/SelfNorm address. Everything is a function of the
seed; :func:`ensure_generated` writes the set once and reuses it while the parameters match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np
from PIL import Image

from snc.data.segmentation.labels import CLASSES, PALETTE

L = {c.name: c.label_id for c in CLASSES}
EGO, STATIC = 1, 4
_ID_COLORS = np.zeros((256, 3), dtype=np.float32)  # labelId -> base colour
for _c in CLASSES:
    _ID_COLORS[_c.label_id] = _c.color
_ID_COLORS[EGO] = (40, 40, 40)
_ID_COLORS[STATIC] = (110, 90, 60)
# target "camera": per-channel gain and offset that change every channel's statistics
_GAIN = np.array([0.55, 0.9, 1.3], np.float32)
_OFFSET = np.array([60.0, 10.0, -20.0], np.float32)

VAL_CITIES = ("frankfurt", "lindau", "munster")
TRAIN_CITIES = ("aachen", "bochum")


@dataclass(frozen=True)
class GeneratedSpec:
    """Sizes of the generated set (``(height, width)``)."""

    seed: int = 0
    source_size: Tuple[int, int] = (72, 132)
    target_size: Tuple[int, int] = (64, 128)
    source_train: int = 96
    source_val: int = 16
    source_test: int = 8
    target_train: int = 8
    target_val: int = 16
    version: int = 2


def draw_layout(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random street layout ``(h, w)`` uint8 of Cityscapes labelIds."""
    lab = np.full((h, w), L["sky"], np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))
    vx = int(w * rng.uniform(0.35, 0.65))
    # buildings / walls / vegetation along the horizon
    x = 0
    while x < w:
        bw = int(rng.integers(max(3, w // 12), max(4, w // 4)))
        top = int(horizon - rng.uniform(0.1, 0.9) * horizon)
        cls = rng.choice([L["building"]] * 4 + [L["vegetation"]] * 2 + [L["wall"]])
        lab[top:horizon + 1, x:x + bw] = cls
        x += bw
    for _ in range(int(rng.integers(1, 4))):  # trees in front of buildings
        cx, cy = int(rng.integers(0, w)), int(horizon - rng.uniform(0.1, 0.5) * horizon)
        axes = (int(rng.integers(3, w // 8 + 4)), int(rng.integers(3, h // 6 + 3)))
        cv2.ellipse(lab, (cx, cy), axes, 0, 0, 360, int(L["vegetation"]), -1)
    # ground: terrain, sidewalks, road in perspective
    lab[horizon:] = L["terrain"]
    spread = rng.uniform(0.6, 1.1)
    left_b, right_b = int(vx - spread * w), int(vx + spread * w)
    cv2.fillPoly(lab, [np.array([[vx - 2, horizon], [vx + 2, horizon], [right_b + w // 2, h],
                                 [left_b - w // 2, h]], np.int32)], int(L["sidewalk"]))
    cv2.fillPoly(lab, [np.array([[vx - 1, horizon], [vx + 1, horizon], [right_b, h],
                                 [left_b, h]], np.int32)], int(L["road"]))
    if rng.random() < 0.6:  # fence along one side
        side = rng.choice([-1, 1])
        y0 = horizon + int((h - horizon) * 0.1)
        x0, x1 = (0, max(1, vx - w // 4)) if side < 0 else (min(w - 1, vx + w // 4), w)
        lab[y0 - max(2, h // 16):y0, x0:x1] = L["fence"]
    # poles with lights / signs
    for _ in range(int(rng.integers(1, 4))):
        px = int(rng.choice([rng.integers(0, max(1, vx - w // 5)),
                             rng.integers(min(w - 1, vx + w // 5), w)]))
        base = int(rng.integers(horizon + 1, h))
        top = max(0, int(base - rng.uniform(0.5, 0.9) * h))
        lab[top:base, px:px + max(1, w // 64)] = L["pole"]
        box = (max(2, w // 40), max(3, h // 16))
        cls = L["traffic light"] if rng.random() < 0.5 else L["traffic sign"]
        lab[top:top + box[1], max(0, px - box[0] // 2):px + box[0]] = cls
    # objects on the road, far (small) to near (large)
    movers = (["car"] * 5 + ["truck", "bus", "train", "person", "person", "rider",
                             "motorcycle", "bicycle"])
    for _ in range(int(rng.integers(2, 6))):
        name = movers[int(rng.integers(len(movers)))]
        y = int(rng.uniform(horizon + 2, h - 1))
        depth = (y - horizon) / max(1, h - horizon)  # 0 far .. 1 near
        scale = 0.15 + 0.85 * depth
        cx = int(vx + (rng.uniform(-0.6, 0.6) * spread * w) * depth)
        ow, oh = {"car": (0.22, 0.12), "truck": (0.28, 0.22), "bus": (0.35, 0.25),
                  "train": (0.5, 0.25), "person": (0.04, 0.2), "rider": (0.05, 0.2),
                  "motorcycle": (0.08, 0.08), "bicycle": (0.08, 0.08)}[name]
        bw, bh = max(2, int(ow * w * scale)), max(2, int(oh * h * scale * 2))
        if name in ("person", "rider"):
            cv2.ellipse(lab, (cx, y - bh // 2), (max(1, bw // 2), max(1, bh // 2)), 0, 0, 360,
                        int(L[name]), -1)
            if name == "rider":
                lab[max(0, y - bh // 4):y, max(0, cx - bw):cx + bw] = L["bicycle"]
        elif name in ("motorcycle", "bicycle"):
            cv2.ellipse(lab, (cx, y - bh // 2), (max(1, bw // 2), max(1, bh // 2)), 0, 0, 360,
                        int(L[name]), -1)
        else:
            lab[max(0, y - bh):y, max(0, cx - bw // 2):max(0, cx + bw // 2)] = L[name]
    if rng.random() < 0.3:  # ignored: ego-vehicle bonnet
        lab[h - max(2, h // 12):] = EGO
    if rng.random() < 0.5:  # ignored: a static object
        sx, sy = int(rng.integers(0, w - 3)), int(rng.integers(horizon, h - 2))
        lab[sy:sy + 3, sx:sx + 3] = STATIC
    return lab


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]


def render(label_ids: np.ndarray, rng: np.random.Generator, style: str) -> np.ndarray:
    """``(h, w)`` labelIds -> ``(h, w, 3)`` uint8 RGB in the ``source`` or ``target`` style."""
    h, w = label_ids.shape
    base = _ID_COLORS[label_ids]
    # per-class shade jitter per image (the same class varies in colour between images)
    jitter = rng.normal(0, 12, (256, 3)).astype(np.float32)
    img = base + jitter[label_ids]
    shade = np.linspace(1.1, 0.85, h, dtype=np.float32)[:, None, None]
    if style == "source":  # mild per-image channel gain/bias: the style variation within GTA5
        gain, bias = rng.uniform(0.8, 1.2, (1, 1, 3)), rng.normal(0, 10, (1, 1, 3))
        img = (img * gain + bias) * shade
        img = img + 4.0 * _smooth_noise(rng, h, w, 8) + rng.normal(0, 3, (h, w, 3))
    elif style == "target":  # a channel gain/bias outside that range, low contrast, texture
        img = img * _GAIN + _OFFSET
        mean = img.mean(axis=(0, 1), keepdims=True)
        img = mean + 0.7 * (img - mean) + rng.normal(0, 10, (1, 1, 3))
        img = img * shade[::-1] + 10.0 * _smooth_noise(rng, h, w, 3)
        img = img + rng.normal(0, 8, (h, w, 3))              # sensor noise / texture
    else:
        raise ValueError(f"style must be source or target, got {style!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _palette_png(label_ids: np.ndarray, path: Path) -> None:
    im = Image.fromarray(label_ids, mode="P")
    pal = np.zeros((256, 3), np.uint8)
    for c in CLASSES:  # GTA5 label PNGs are palette images in the Cityscapes colours
        pal[c.label_id] = PALETTE[c.train_id]
    im.putpalette(pal.reshape(-1).tolist())
    im.save(path)


def write_generated(root: Path, spec: GeneratedSpec = GeneratedSpec()) -> Path:
    """Writes the set under ``root``: ``root/gta5`` (GTA5 layout) and ``root/cityscapes``."""
    import scipy.io

    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    gta = root / "gta5"
    (gta / "images").mkdir(parents=True, exist_ok=True)
    (gta / "labels").mkdir(parents=True, exist_ok=True)
    n = spec.source_train + spec.source_val + spec.source_test
    for i in range(1, n + 1):
        lab = draw_layout(rng, *spec.source_size)
        Image.fromarray(render(lab, rng, "source")).save(gta / "images" / f"{i:05d}.png")
        _palette_png(lab, gta / "labels" / f"{i:05d}.png")
    ids = np.arange(1, n + 1)
    a, b = spec.source_train, spec.source_train + spec.source_val
    scipy.io.savemat(str(gta / "split.mat"), {"trainIds": ids[:a, None], "valIds": ids[a:b, None],
                                               "testIds": ids[b:, None]})
    cs = root / "cityscapes"
    for split, count, cities in (("train", spec.target_train, TRAIN_CITIES),
                                 ("val", spec.target_val, VAL_CITIES)):
        for k in range(count):
            city = cities[k % len(cities)]
            stem = f"{city}_{k:06d}_000019"
            (cs / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (cs / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            lab = draw_layout(rng, *spec.target_size)
            Image.fromarray(render(lab, rng, "target")).save(
                cs / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(lab, mode="L").save(
                cs / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    (root / "generated.json").write_text(json.dumps(asdict(spec), sort_keys=True))
    return root


def ensure_generated(root: Path, spec: GeneratedSpec = GeneratedSpec()) -> Path:
    """``root`` holding the set of ``spec``, written if absent or made with other settings."""
    root = Path(root)
    marker = root / "generated.json"
    want = json.loads(json.dumps(asdict(spec), sort_keys=True))
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    return write_generated(root, spec)
