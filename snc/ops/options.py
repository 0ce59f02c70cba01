"""Typed options of the units: one spelling each, from the command line to the op.

These frozen dataclasses are the schemas of the ``sn``, ``cn``, ``position`` and ``crop`` config
groups (registered with Hydra's ConfigStore in :mod:`snc.config`), the arguments of
:func:`snc.models.build_model` and of the :class:`~snc.ops.CrossNorm` /
:class:`~snc.ops.SelfNorm` units. Each validates itself when it is made, with a message that
names the fix.
"""

from dataclasses import dataclass
from typing import Any, Optional, Sequence

CROPS = ("neither", "style", "content", "both")
MODES = ("one_instance", "two_instance")
ORDERS = ("cn_sn", "sn_cn")


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    """Raises ValueError naming the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class CrossNormOptions:
    """CrossNorm (paper Sec. 3.1) and its controller.

    Attributes:
        mode: ``two_instance`` (official: partners across the batch) or ``one_instance``
            (paper Eq. 4: channels of one sample exchange statistics).
        crop: ``neither``, ``style``, ``content`` or ``both`` (paper Eqs. 5-6).
        beta: the box area ratio is drawn from Beta(beta, beta).
        threshold: a box is accepted when its area ratio exceeds ``t`` (paper: 0.1).
        self_pairing: a sample may be its own partner (official).
        channel_shuffle: also permute the partner's channels (2-instance; official: off).
        active_num: CN units switched on per CN forward.
        prob: probability that a training step uses CN.
        order: ``cn_sn`` (official) or ``sn_cn`` where CN and SN share a site (Table 7).
        consist_wt: weight of the CN consistency (JSD) term (objectives ``consistency``,
            ``augmix``).
        augmix_joint: official ImageNet: image CN acts on the whole 3-view AugMix batch.
    """

    mode: str = "two_instance"
    crop: str = "neither"
    beta: float = 1.0
    threshold: float = 0.1
    self_pairing: bool = True
    channel_shuffle: bool = False
    active_num: int = 1
    prob: float = 0.5
    order: str = "cn_sn"
    consist_wt: float = 10.0
    augmix_joint: bool = False

    def __post_init__(self) -> None:
        check_choice("CrossNorm mode", self.mode, MODES)
        check_choice("CrossNorm crop", self.crop, CROPS)
        check_choice("CNSN order", self.order, ORDERS)
        if not self.beta > 0:
            raise ValueError(f"CrossNorm beta must be > 0, got cn.beta={self.beta}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"CrossNorm crop threshold t must be in [0, 1), got "
                             f"cn.threshold={self.threshold}")
        if not 0.0 <= float(self.prob) <= 1.0:
            raise ValueError(f"cn.prob must be in [0, 1], got {self.prob}")
        if int(self.active_num) < 1:
            raise ValueError(f"cn.active_num must be >= 1, got {self.active_num}")


@dataclass(frozen=True)
class SelfNormOptions:
    """SelfNorm (paper Sec. 3.2).

    Attributes:
        gates: 1 (official: one shared gate network for mean and std) or 2 (the paper's
            separate f and g, Eq. 2).
    """

    gates: int = 1

    def __post_init__(self) -> None:
        if self.gates not in (1, 2):
            raise ValueError(f"sn.gates must be 1 (official) or 2 (paper), got {self.gates}")


@dataclass(frozen=True)
class SqueezeExcitationOptions:
    """Squeeze-excitation in place of SelfNorm (paper Table 8).

    Attributes:
        reduction: bottleneck ratio of the excitation MLP.
    """

    reduction: int = 16

    def __post_init__(self) -> None:
        if int(self.reduction) < 1:
            raise ValueError(f"sn.reduction must be >= 1, got {self.reduction}")


@dataclass(frozen=True)
class Placement:
    """Where the units sit.

    Attributes:
        name: the position of every unit (None: the backbone's paper default).
        sn: a separate position for SelfNorm/SE (e.g. ImageNet's image CN + in-network SN).
        cn: a separate position for CrossNorm.
        blocks: ``"all"`` or the stages (1-based) whose cells get units (paper Table 6).
    """

    name: Optional[str] = None
    sn: Optional[str] = None
    cn: Optional[str] = None
    blocks: Any = "all"

    def __post_init__(self) -> None:
        blocks = self.blocks
        if isinstance(blocks, str) and blocks != "all":
            raise ValueError(f"position.blocks must be 'all' or a list of stage numbers, got "
                             f"{blocks!r}")
        if not isinstance(blocks, (str, int)) and blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in blocks))

    @property
    def sn_position(self) -> Optional[str]:
        return self.sn or self.name

    @property
    def cn_position(self) -> Optional[str]:
        return self.cn or self.name


STYLE_MIXES = ("random", "crossdomain")


def check_probability(value: float) -> None:
    """Raises ValueError unless the apply probability ``style.p`` is in [0, 1]."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"style.p must be in [0, 1], got {value}")


def check_positive(key: str, value: float) -> None:
    """Raises ValueError unless ``style.<key>`` is > 0."""
    if not float(value) > 0.0:
        raise ValueError(f"style.{key} must be > 0, got {value}")


@dataclass(frozen=True)
class MixStyleOptions:
    """MixStyle (Zhou et al., ICLR 2021, Sec. 3).

    Attributes:
        p: probability that a training forward of an active unit mixes styles.
        alpha: the mixing weight is drawn from Beta(alpha, alpha) per sample.
        eps: added to the variance before the square root.
        mix: ``random`` (partner: a random permutation of the batch) or ``crossdomain`` (the
            batch holds two domains as halves; partners come from the other half).
    """

    p: float = 0.5
    alpha: float = 0.1
    eps: float = 1e-6
    mix: str = "random"

    def __post_init__(self) -> None:
        check_probability(self.p)
        check_positive("alpha", self.alpha)
        check_positive("eps", self.eps)
        check_choice("style.mix", self.mix, STYLE_MIXES)


@dataclass(frozen=True)
class DSUOptions:
    """DSU, domain shifts with uncertainty (Li et al., ICLR 2022, Eqs. 3-8).

    Attributes:
        p: probability that a training forward of an active unit perturbs the statistics.
        eps: added to the variances (of the features and of the statistics) before the root.
        factor: scale of the sampled perturbation (0: the unit is the identity).
    """

    p: float = 0.5
    eps: float = 1e-6
    factor: float = 1.0

    def __post_init__(self) -> None:
        check_probability(self.p)
        check_positive("eps", self.eps)
        if not float(self.factor) >= 0.0:
            raise ValueError(f"style.factor must be >= 0, got {self.factor}")


@dataclass(frozen=True)
class EFDMixOptions:
    """EFDMix (Zhang et al., CVPR 2022): exact feature distribution mixing by sorting.

    Attributes:
        p: probability that a training forward of an active unit mixes.
        alpha: the mixing weight is drawn from Beta(alpha, alpha) per sample.
        mix: ``random`` or ``crossdomain``, as in :class:`MixStyleOptions`.
    """

    p: float = 0.5
    alpha: float = 0.1
    mix: str = "random"

    def __post_init__(self) -> None:
        check_probability(self.p)
        check_positive("alpha", self.alpha)
        check_choice("style.mix", self.mix, STYLE_MIXES)


@dataclass(frozen=True)
class PermutedAdaINOptions:
    """Permuted AdaIN (Nuriel, Benaim and Wolf, CVPR 2021).

    Attributes:
        p: probability that a training forward of an active unit swaps statistics.
        eps: added to the variance before the square root.
    """

    p: float = 0.01
    eps: float = 1e-5

    def __post_init__(self) -> None:
        check_probability(self.p)
        check_positive("eps", self.eps)
