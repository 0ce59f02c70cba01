"""SelfNorm: attention-recalibrated channel mean and standard deviation.

Paper: Tang et al., "CrossNorm and SelfNorm for Generalization under Distribution Shifts",
ICCV 2021, Sec. 3 (Eq. 2): the channel ``A`` becomes ``g*sigma * (A - mu)/sigma + f*mu`` where
the attention functions ``f`` (mean) and ``g`` (std) read ``(mu, sigma)``.

Official counterpart (``cnsn.py``, ``SelfNorm``): one gate ``g = sigmoid(BN(w1*mu + w2*sigma))``
per channel (a depthwise Conv1d of kernel 2 without bias, then BatchNorm1d) and output ``x * g``,
which scales mean and std alike (``f = g``). ``gates=1`` reproduces it (4*C parameters);
``gates=2`` is the paper's form with a second identical branch for ``f`` (8*C parameters), equal
to the official ``is_two=True`` path: ``x*g + mu*(f - g)``. Parameter names (``g_fc``, ``g_bn``,
``f_fc``, ``f_bn``) follow the official module so its weights load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from snc.ops.stats import SELFNORM_EPS, channel_stats


class SelfNorm(nn.Module):
    """SelfNorm unit on ``channels`` channels.

    Args:
        channels: number of channels C of the input ``(N, C, *spatial)``.
        gates: 1 = official single gate (output ``x * g``); 2 = the paper's separate f and g.
        eps: variance epsilon (official: 1e-12).

    Shapes:
        input ``(N, C, *spatial)``, output the same shape and dtype. The gates are computed in
        float32 even under autocast.

    Raises:
        ValueError: in training mode with a batch of one (the gate's BatchNorm1d needs N >= 2).
    """

    def __init__(self, channels: int, gates: int = 1, eps: float = SELFNORM_EPS) -> None:
        super().__init__()
        if gates not in (1, 2):
            raise ValueError(f"SelfNorm gates must be 1 (official) or 2 (paper), got {gates}")
        self.channels = channels
        self.gates = gates
        self.eps = eps
        self.g_fc = nn.Conv1d(channels, channels, kernel_size=2, groups=channels, bias=False)
        self.g_bn = nn.BatchNorm1d(channels)
        if gates == 2:
            self.f_fc = nn.Conv1d(channels, channels, kernel_size=2, groups=channels, bias=False)
            self.f_bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            raise ValueError(
                "SelfNorm needs a batch of at least 2 in training mode (its gate normalizes over "
                "the batch); use a larger batch or drop the last incomplete batch, or call eval()"
            )
        n, c = x.shape[:2]
        mean, std = channel_stats(x, self.eps)
        stats = torch.stack((mean.reshape(n, c), std.reshape(n, c)), dim=-1)  # (N, C, 2)
        shape = mean.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            g = torch.sigmoid(self.g_bn(self.g_fc(stats))).reshape(shape)
            if self.gates == 1:
                return x * g.to(x.dtype)
            f = torch.sigmoid(self.f_bn(self.f_fc(stats))).reshape(shape)
            return x * g.to(x.dtype) + (mean * (f - g)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, gates={self.gates}"
