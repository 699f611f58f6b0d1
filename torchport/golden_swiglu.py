"""golden_swiglu in torch: the SwiGLU MLP of golden-ratio width.

The mathematics and source: the declaration, dreamteam/components/golden_swiglu.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.config import GPTConfig


class GoldenSwiGLU(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.swiglu_hidden
        self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.n_layer = config.n_layer

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the residual projection at 0.02 / sqrt(2 n_layer)."""
        nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layer))

    def forward(self, x):
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x)))


# what golden_swiglu fills in the torch GPT (torchport/model.py)
FILLS = {"mlp": GoldenSwiGLU}
