"""rms_qknorm in torch: the RMSNorm module, used for every norm and for the per-head query and key norms.

The mathematics and sources: the declaration, dreamteam/components/rms_qknorm.py.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis; weight starts at `gain` (1 by default)."""

    def __init__(self, ndim: int, eps: float = 1e-6, gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((ndim,), float(gain)))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
