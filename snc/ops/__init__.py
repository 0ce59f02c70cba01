"""The paper's math: channel statistics, CrossNorm, SelfNorm, the CNSN unit, SE.

This package imports only torch (and NumPy for the Beta draw of the box sampler); it knows
nothing of models, data or configs. ``options.py`` holds the typed unit options (frozen
dataclasses) that the config schemas, ``build_model`` and the units share.
"""

from snc.ops.cnsn import CNSN, CrossNormController, find_cross_norm_units
from snc.ops.crossnorm import (
    CrossNorm,
    RowCrossNorm,
    cross_norm,
    sample_box,
    sample_cross_norm_args,
)
from snc.ops.options import (
    CROPS,
    MODES,
    ORDERS,
    CrossNormOptions,
    Placement,
    SelfNormOptions,
    SqueezeExcitationOptions,
)
from snc.ops.se import SqueezeExcitation
from snc.ops.selfnorm import SelfNorm
from snc.ops.stats import CROSSNORM_EPS, SELFNORM_EPS, channel_stats, crop

__all__ = [
    "CNSN",
    "CROPS",
    "CROSSNORM_EPS",
    "CrossNorm",
    "CrossNormController",
    "CrossNormOptions",
    "MODES",
    "ORDERS",
    "Placement",
    "RowCrossNorm",
    "SELFNORM_EPS",
    "SelfNorm",
    "SelfNormOptions",
    "SqueezeExcitation",
    "SqueezeExcitationOptions",
    "channel_stats",
    "crop",
    "cross_norm",
    "find_cross_norm_units",
    "sample_box",
    "sample_cross_norm_args",
]
