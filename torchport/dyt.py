"""dyt in torch: Dynamic Tanh, the module in every norm's place.

The mathematics and source: the declaration, dreamteam/components/dyt.py.
"""

from __future__ import annotations

import torch
from torch import nn


class DyT(nn.Module):
    """weight * tanh(alpha * x) (+ bias) elementwise; alpha one scalar starting at `alpha`, weight at 1, bias at 0."""

    def __init__(self, ndim: int, bias: bool, alpha: float):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        y = torch.tanh(self.alpha * x) * self.weight
        return y if self.bias is None else y + self.bias


# what dyt fills in the torch GPT (torchport/model.py): every norm
FILLS = {"norm": lambda config: DyT(config.n_embd, config.bias, config.dyt_alpha)}
