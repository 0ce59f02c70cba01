"""The paper's math: channel statistics, CrossNorm, SelfNorm, the CNSN unit, SE, and the
style augmentations of related work (MixStyle, DSU, EFDMix, Permuted AdaIN).

This package imports only torch (and NumPy for the Beta draw of the box sampler); it knows
nothing of models, data or configs. ``options.py`` holds the typed unit options (frozen
dataclasses) that the config schemas, ``build_model`` and the units share.
"""

from snc.ops.cnsn import CNSN, CrossNormController, find_cross_norm_units, find_switched_units
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
    STYLE_MIXES,
    CrossNormOptions,
    DSUOptions,
    EFDMixOptions,
    MixStyleOptions,
    PermutedAdaINOptions,
    Placement,
    SelfNormOptions,
    SqueezeExcitationOptions,
)
from snc.ops.se import SqueezeExcitation
from snc.ops.selfnorm import SelfNorm
from snc.ops.stats import CROSSNORM_EPS, SELFNORM_EPS, channel_stats, crop
from snc.ops.style import (
    DSU,
    STYLE_METHODS,
    EFDMix,
    MixStyle,
    PermutedAdaIN,
    StyleUnit,
    dsu,
    efdmix,
    mixstyle,
    permuted_adain,
    sample_dsu_args,
    sample_efdmix_args,
    sample_mixstyle_args,
    sample_permuted_adain_args,
    style_unit,
)

__all__ = [
    "CNSN",
    "CROPS",
    "CROSSNORM_EPS",
    "CrossNorm",
    "CrossNormController",
    "CrossNormOptions",
    "DSU",
    "DSUOptions",
    "EFDMix",
    "EFDMixOptions",
    "MODES",
    "MixStyle",
    "MixStyleOptions",
    "ORDERS",
    "PermutedAdaIN",
    "PermutedAdaINOptions",
    "Placement",
    "RowCrossNorm",
    "SELFNORM_EPS",
    "STYLE_METHODS",
    "STYLE_MIXES",
    "SelfNorm",
    "SelfNormOptions",
    "SqueezeExcitation",
    "SqueezeExcitationOptions",
    "StyleUnit",
    "channel_stats",
    "crop",
    "cross_norm",
    "dsu",
    "efdmix",
    "find_cross_norm_units",
    "find_switched_units",
    "mixstyle",
    "permuted_adain",
    "sample_box",
    "sample_cross_norm_args",
    "sample_dsu_args",
    "sample_efdmix_args",
    "sample_mixstyle_args",
    "sample_permuted_adain_args",
    "style_unit",
]
