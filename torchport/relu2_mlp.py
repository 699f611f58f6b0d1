"""relu2_mlp in torch: the MLP with the squared ReLU.

The mathematics and source: the declaration, dreamteam/components/relu2_mlp.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.config import GPTConfig


def relu2(z):
    """relu(z)^2, whose derivative is 2 relu(z)."""
    return F.relu(z).square()


class Relu2MLP(nn.Module):
    """c_proj(relu(c_fc(x))^2), hidden width 4 * n_embd: parameters, names and initialization of the baseline MLP."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.n_layer = config.n_layer

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the residual projection at 0.02 / sqrt(2 n_layer)."""
        nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layer))

    def forward(self, x):
        return self.dropout(self.c_proj(relu2(self.c_fc(x))))


# what relu2_mlp fills in the torch GPT (torchport/model.py)
FILLS = {"mlp": Relu2MLP}
