"""The 19 Cityscapes evaluation classes: labelIds, trainIds, names, colours.

Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016;
table of cityscapesScripts ``helpers/labels.py``. GTA5 ("Playing for Data", Richter et al.,
ECCV 2016) label PNGs hold the same labelIds, so one table maps both datasets (the
``id_to_trainid`` of AdaptSegNet/ADVENT-style GTA5 loaders). Every labelId in 0..33 that is not
an evaluation class maps to :data:`IGNORE` (255); a value above 33 is not a Cityscapes labelId
and is refused by :func:`to_train_ids` (license plate, id -1, is never drawn in label PNGs).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

IGNORE = 255
NUM_CLASSES = 19
MAX_LABEL_ID = 33


class SegClass(NamedTuple):
    train_id: int
    name: str
    label_id: int
    color: Tuple[int, int, int]


CLASSES: Tuple[SegClass, ...] = (
    SegClass(0, "road", 7, (128, 64, 128)),
    SegClass(1, "sidewalk", 8, (244, 35, 232)),
    SegClass(2, "building", 11, (70, 70, 70)),
    SegClass(3, "wall", 12, (102, 102, 156)),
    SegClass(4, "fence", 13, (190, 153, 153)),
    SegClass(5, "pole", 17, (153, 153, 153)),
    SegClass(6, "traffic light", 19, (250, 170, 30)),
    SegClass(7, "traffic sign", 20, (220, 220, 0)),
    SegClass(8, "vegetation", 21, (107, 142, 35)),
    SegClass(9, "terrain", 22, (152, 251, 152)),
    SegClass(10, "sky", 23, (70, 130, 180)),
    SegClass(11, "person", 24, (220, 20, 60)),
    SegClass(12, "rider", 25, (255, 0, 0)),
    SegClass(13, "car", 26, (0, 0, 142)),
    SegClass(14, "truck", 27, (0, 0, 70)),
    SegClass(15, "bus", 28, (0, 60, 100)),
    SegClass(16, "train", 31, (0, 80, 100)),
    SegClass(17, "motorcycle", 32, (0, 0, 230)),
    SegClass(18, "bicycle", 33, (119, 11, 32)),
)
CLASS_NAMES: Tuple[str, ...] = tuple(c.name for c in CLASSES)
# metric-key spelling: "traffic light" -> "traffic_light"
CLASS_KEYS: Tuple[str, ...] = tuple(c.name.replace(" ", "_") for c in CLASSES)

# labelIds that exist in the Cityscapes table but are not evaluated (all -> 255)
IGNORED_LABEL_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)

# lookup table over every uint8 value: trainId, 255 (ignored labelId) or -1 (not a labelId)
_LUT = np.full(256, -1, dtype=np.int16)
_LUT[list(IGNORED_LABEL_IDS)] = IGNORE
for _c in CLASSES:
    _LUT[_c.label_id] = _c.train_id
assert (_LUT[: MAX_LABEL_ID + 1] >= 0).all()
LABEL_ID_TO_TRAIN_ID = _LUT.copy()

PALETTE = np.zeros((256, 3), dtype=np.uint8)  # trainId -> RGB; 255 (ignore) stays black
for _c in CLASSES:
    PALETTE[_c.train_id] = _c.color


def to_train_ids(label_ids: np.ndarray, source: Optional[str] = None) -> np.ndarray:
    """Maps a uint8 labelId map ``(H, W)`` to trainIds (uint8, 255 = ignore).

    Raises:
        ValueError: naming ``source`` (the file) and the offending values when the map holds
            values that are not Cityscapes labelIds (above 33), e.g. a colour or trainId PNG
            given where a labelId PNG is expected.
    """
    if label_ids.dtype != np.uint8:
        if label_ids.min() < 0 or label_ids.max() > 255:
            raise ValueError(f"{source or 'label map'}: values outside 0..255")
        label_ids = label_ids.astype(np.uint8)
    mapped = _LUT[label_ids]
    if (mapped < 0).any():
        bad = np.unique(label_ids[mapped < 0])
        raise ValueError(
            f"{source or 'label map'} holds values {bad[:10].tolist()} that are not Cityscapes "
            f"labelIds (0..{MAX_LABEL_ID}); a labelIds PNG is expected (GTA5 labels/*.png, "
            "Cityscapes *_gtFine_labelIds.png), not a colour, instance or trainId PNG")
    return mapped.astype(np.uint8)


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` trainIds -> ``(H, W, 3)`` uint8 RGB in the Cityscapes palette (ignore black)."""
    return PALETTE[np.asarray(train_ids, dtype=np.uint8)]
