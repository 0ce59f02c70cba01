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

from typing import Callable

import torch
from torch import nn

from snc.ops.stats import SELFNORM_EPS, _mean_std, channel_stats, plain_mean_std, stats_backward


def use_plain_ops(x: torch.Tensor) -> bool:
    """True where the units run as plain tensor ops: under ``torch.compile`` (the compiler
    fuses them and captures the step) and on any device but the CPU. The fused autograd
    Functions (one pass less over the input in the backward) stay for eager CPU, where they win.
    Both give equal results (tested)."""
    return torch.compiler.is_compiling() or x.device.type != "cpu"


class _SelfNormOneGate(torch.autograd.Function):
    """``x * gate(mean(x), std(x))`` with one fused backward pass over ``x``.

    The gate (a few ops on ``(N, C, 2)``) keeps its own small autograd graph, built in the
    forward; the backward reads ``x`` and the output gradient once more:
    ``dx = dy * g + dmean / L + dstd * (x - mean) / ((L - 1) * std)`` with
    ``dg = sum_L dy * x``. Equal to autograd through the unfused ops (tested).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: Callable, eps: float, *params: torch.Tensor):
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1)
        mean, std = _mean_std(flat.float(), eps)
        with torch.enable_grad():
            mean_leaf = mean.detach().requires_grad_()
            std_leaf = std.detach().requires_grad_()
            g = gate(mean_leaf, std_leaf)  # (N, C, 1) float32, graph to the gate parameters
        ctx.save_for_backward(x, mean, std)
        ctx.graph = (g, mean_leaf, std_leaf, params)
        return x * g.detach().reshape((n, c) + (1,) * (x.dim() - 2)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, mean, std = ctx.saved_tensors
        g, mean_leaf, std_leaf, params = ctx.graph
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1).float()
        grad_flat = grad_out.reshape(n, c, -1).float()
        grad_g = torch.linalg.vecdot(grad_flat, flat).unsqueeze(-1)
        # retain_graph: the gate graph is tiny, and an outer backward(retain_graph=True) may
        # call this backward again
        # frozen parameters (feature inversion, fine-tuning around a fixed unit) get no gradient
        trainable = [p for p in params if p.requires_grad]
        grads = torch.autograd.grad(g, [mean_leaf, std_leaf] + trainable, grad_g,
                                    allow_unused=True, retain_graph=True)
        grad_x = stats_backward(flat, mean, std, grads[0], grads[1])
        grad_x.addcmul_(grad_flat, g.detach())
        by_param = iter(grads[2:])
        param_grads = tuple(next(by_param) if p.requires_grad else None for p in params)
        return (grad_x.reshape(x.shape).to(x.dtype), None, None) + param_grads


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
        plain = use_plain_ops(x)
        if self.gates == 1 and torch.is_grad_enabled() and not plain:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return _SelfNormOneGate.apply(x, self._g, self.eps, *self._g_params())
        mean, std = plain_mean_std(x, self.eps) if plain else channel_stats(x, self.eps)
        shape = mean.shape
        n, c = x.shape[:2]
        with torch.autocast(device_type=x.device.type, enabled=False):
            g = self._g(mean.reshape(n, c, 1), std.reshape(n, c, 1)).reshape(shape)
            if self.gates == 1:
                return x * g.to(x.dtype)
            f = self._f(mean.reshape(n, c, 1), std.reshape(n, c, 1)).reshape(shape)
            return x * g.to(x.dtype) + (mean * (f - g)).to(x.dtype)

    def _g(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """g = sigmoid(BN(w1 * mean + w2 * std)) from ``(N, C, 1)`` statistics."""
        return torch.sigmoid(self.g_bn(self.g_fc(torch.cat((mean, std), dim=-1))))

    def _f(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.f_bn(self.f_fc(torch.cat((mean, std), dim=-1))))

    def _g_params(self):
        return [p for p in (self.g_fc.weight, self.g_bn.weight, self.g_bn.bias) if p is not None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, gates={self.gates}"
