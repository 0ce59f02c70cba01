"""snc: CrossNorm and SelfNorm for generalization under distribution shifts.

A reference framework for Tang et al., ICCV 2021: the ops (``snc.ops``), backbones with every
placement the paper ablates (``snc.models``), and the training/evaluation pipeline.
"""

__version__ = "0.1.0"
