"""Cityscapes fine annotations (Cordts et al., CVPR 2016) in the published layout.

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (2048x1024)
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Download (registration needed): https://www.cityscapes-dataset.com/downloads/
(``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``). The labelIds PNGs are
mapped to trainIds on the fly, so cityscapesScripts' ``createTrainIdLabelImgs`` is not needed.
Splits: train 2,975 (18 cities), val 500 (frankfurt 267, lindau 59, munster 174).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from snc.data.segmentation.base import Pair, SegmentationDataError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

LAYOUT = """expected layout (Cityscapes fine, https://www.cityscapes-dataset.com/downloads/,
registration needed: leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip):
  {root}/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  {root}/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
set dataset.target_root=<folder> (or paths.data_dir), or use dataset=generated offline"""


def cityscapes_split(root: Path, split: str, names: Optional[List[str]] = None) -> List[Pair]:
    """Pairs of ``split`` sorted by ``<city>/<stem>``, or those of ``names`` (a list file's
    ``<city>/<city>_<seq>_<frame>`` lines, the official list format).

    Raises:
        SegmentationDataError: naming the expected layout when the folders are missing or
            empty, or naming the file when an image has no label.
    """
    root = Path(root)
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    layout = LAYOUT.format(root=root, split=split)
    if not image_dir.is_dir():
        raise SegmentationDataError(f"Cityscapes not found: {image_dir} is missing.\n{layout}")
    if names is None:
        names = sorted(f"{p.parent.name}/{p.name[:-len(IMAGE_SUFFIX)]}"
                       for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not names:
            raise SegmentationDataError(f"no *{IMAGE_SUFFIX} under {image_dir}.\n{layout}")
    pairs = [Pair(n, image_dir / f"{n}{IMAGE_SUFFIX}", label_dir / f"{n}{LABEL_SUFFIX}")
             for n in names]
    for p in pairs:
        if not p.label.is_file():
            raise SegmentationDataError(
                f"label {p.label} for {p.image} is missing (gtFine_trainvaltest.zip unpacked "
                f"under {root}?)\n{layout}")
    return pairs
