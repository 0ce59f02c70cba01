"""Which sites of a network get a CNSN unit, and what the unit holds.

A backbone asks a :class:`UnitFactory` once per site, naming the site's position, channel count
and stage; the factory returns a :class:`~snc.ops.CNSN` unit or None. Positions are the paper's
(appendix Figs. 8 and 9): ``identity``, ``pre_residual``, ``post_residual``, ``post_addition``;
``after_conv``, ``after_norm``, ``after_act``; ``layer_input``, ``new_features``, ``bottleneck``;
``stage_output`` (after a stage's last cell; WRN and ResNeXt) and ``image``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, FrozenSet, Optional, Union

from torch import nn

from snc.ops import (
    CNSN,
    CrossNorm,
    CrossNormOptions,
    SelfNorm,
    SelfNormOptions,
    SqueezeExcitation,
    SqueezeExcitationOptions,
)
from snc.ops.style import style_unit

IMAGE = "image"
STAGE_OUTPUT = "stage_output"
"""After a stage's last cell: the stage-level site where MixStyle, DSU and EFDMix insert their
ops (Dassl's ResNet ``featuremaps``; DSU's ``uresnet.py``), offered by WRN and ResNeXt."""

SNOptions = Union[SelfNormOptions, SqueezeExcitationOptions]


@dataclass(frozen=True)
class UnitFactory:
    """Builds the unit of one site.

    Attributes:
        sn: SelfNorm or SE options (paper Table 8), or None for no recalibration unit.
        cn: CrossNorm options, or a style method's options (:mod:`snc.ops.style`: MixStyle,
            DSU, EFDMix, pAdaIN take CrossNorm's slot), or None for no unit there.
        sn_position: where SelfNorm/SE units go (a position name).
        cn_position: where CrossNorm units go.
        blocks: stages (1-based) that get units; None = all. ``image`` ignores it.
    """

    sn: Optional[SNOptions] = None
    cn: Optional[Any] = None
    sn_position: Optional[str] = None
    cn_position: Optional[str] = None
    blocks: Optional[FrozenSet[int]] = None

    def _here(self, position: Optional[str], site: str, stage: int) -> bool:
        if position != site:
            return False
        return site == IMAGE or self.blocks is None or stage in self.blocks

    def __call__(self, site: str, channels: int, stage: int) -> Optional[CNSN]:
        """The unit for ``site`` (a position name) on ``channels`` channels in ``stage``."""
        cn = sn = None
        if self.cn is not None and self._here(self.cn_position, site, stage):
            cn = (CrossNorm(self.cn) if isinstance(self.cn, CrossNormOptions)
                  else style_unit(self.cn))
        if self.sn is not None and self._here(self.sn_position, site, stage):
            sn: Optional[nn.Module]
            kind = SqueezeExcitation if isinstance(self.sn, SqueezeExcitationOptions) else \
                SelfNorm
            # the option fields are the units' keyword arguments: one spelling
            sn = kind(channels, **dataclasses.asdict(self.sn))
        if cn is None and sn is None:
            return None
        order = self.cn.order if isinstance(self.cn, CrossNormOptions) else "cn_sn"
        return CNSN(cn=cn, sn=sn, order=order)


NO_UNITS = UnitFactory()
