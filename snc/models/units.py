"""Which sites of a network get a CNSN unit, and what the unit holds.

A backbone asks a :class:`UnitFactory` once per site, naming the site's position, channel count
and stage; the factory returns a :class:`~snc.ops.CNSN` unit or None. Positions use the names of
DESIGN.md (``identity``, ``pre_residual``, ``post_residual``, ``post_addition``; ``after_conv``,
``after_norm``, ``after_act``; ``layer_input``, ``new_features``, ``bottleneck``; ``image``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional

from torch import nn

from snc.ops import CNSN, CrossNorm, SelfNorm, SqueezeExcitation

IMAGE = "image"


@dataclass(frozen=True)
class UnitFactory:
    """Builds the unit of one site.

    Attributes:
        sn_position: where SelfNorm (or SE) units go; None for none.
        cn_position: where CrossNorm units go; None for none.
        blocks: stages (1-based) that get units; None = all. ``image`` ignores it.
        attention: ``sn`` (SelfNorm) or ``se`` (squeeze-excitation, paper Table 8).
        gates: SelfNorm gates (1 official, 2 paper).
        se_reduction: SE bottleneck ratio.
        order: ``cn_sn`` or ``sn_cn``.
        mode, crop, beta, threshold, self_pairing, channel_shuffle: CrossNorm options.
    """

    sn_position: Optional[str] = None
    cn_position: Optional[str] = None
    blocks: Optional[FrozenSet[int]] = None
    attention: str = "sn"
    gates: int = 1
    se_reduction: int = 16
    order: str = "cn_sn"
    mode: str = "two_instance"
    crop: str = "neither"
    beta: float = 1.0
    threshold: float = 0.1
    self_pairing: bool = True
    channel_shuffle: bool = False

    def _here(self, position: Optional[str], site: str, stage: int) -> bool:
        if position != site:
            return False
        return site == IMAGE or self.blocks is None or stage in self.blocks

    def __call__(self, site: str, channels: int, stage: int) -> Optional[CNSN]:
        """The unit for ``site`` (a position name) on ``channels`` channels in ``stage``."""
        cn = sn = None
        if self._here(self.cn_position, site, stage):
            cn = CrossNorm(
                mode=self.mode,
                crop=self.crop,
                beta=self.beta,
                threshold=self.threshold,
                self_pairing=self.self_pairing,
                channel_shuffle=self.channel_shuffle,
            )
        if self._here(self.sn_position, site, stage):
            sn: Optional[nn.Module]
            if self.attention == "se":
                sn = SqueezeExcitation(channels, self.se_reduction)
            else:
                sn = SelfNorm(channels, gates=self.gates)
        if cn is None and sn is None:
            return None
        return CNSN(cn=cn, sn=sn, order=self.order)


NO_UNITS = UnitFactory()
