"""Squeeze-and-Excitation, the attention baseline SelfNorm is compared with (paper Table 8).

Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018: ``x * sigmoid(W2 relu(W1 avgpool(x)))``
with a bottleneck of ``channels // reduction`` (reduction 16 as in the SE paper). Works on
``(N, C, *spatial)`` inputs so it can sit at every position a SelfNorm unit can.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """SE block on ``channels`` channels.

    Args:
        channels: number of channels C.
        reduction: bottleneck reduction ratio (hidden width ``max(1, C // reduction)``).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.flatten(2).mean(dim=2)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * gate.reshape(gate.shape + (1,) * (x.dim() - 2))
