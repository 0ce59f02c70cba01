"""Figures of the paper from a finished run: image-space CN/SN and feature inversions.

    python -m snc.viz <figure> run_dir=<run dir> [key=value ...]

``model``: the run's network with probes at every unit site and location names;
``inversion``: Mahendran-Vedaldi inversion with the paper's optimiser; ``image``: image-space
CN, PNG grids; ``figures``: one function per figure. Commands: docs/figures.md.
"""

from snc.viz.figures import cn_inversion, image_cn, image_sn, sn_accumulated, sn_off_inversion
from snc.viz.inversion import InversionOptions, SiteReader, invert, total_variation
from snc.viz.model import Network, load_run, network_from_backbone, resolve_location

__all__ = [
    "InversionOptions",
    "Network",
    "SiteReader",
    "cn_inversion",
    "image_cn",
    "image_sn",
    "invert",
    "load_run",
    "network_from_backbone",
    "resolve_location",
    "sn_accumulated",
    "sn_off_inversion",
    "total_variation",
]
