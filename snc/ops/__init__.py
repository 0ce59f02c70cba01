"""The paper's math: channel statistics, CrossNorm, SelfNorm, the CNSN unit, SE.

This package imports only torch (and NumPy for the Beta draw of the box sampler); it knows
nothing of models, data or configs.
"""

from snc.ops.cnsn import CNSN, ORDERS, CrossNormController, find_cross_norm_units
from snc.ops.crossnorm import (
    CROPS,
    MODES,
    CrossNorm,
    cross_norm,
    sample_box,
    sample_cross_norm_args,
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
    "MODES",
    "ORDERS",
    "SELFNORM_EPS",
    "SelfNorm",
    "SqueezeExcitation",
    "channel_stats",
    "crop",
    "cross_norm",
    "find_cross_norm_units",
    "sample_box",
    "sample_cross_norm_args",
]
