"""laplace_glu in torch: the MLP gated by MEGA's Laplace function.

The mathematics, the initialization and the sources: the declaration, dreamteam/components/laplace_glu.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from dreamteam.config import GPTConfig

MU = math.sqrt(0.5)
SIGMA = math.sqrt(1.0 / (4.0 * math.pi))


def laplace(x: torch.Tensor) -> torch.Tensor:
    """MEGA's Laplace function 0.5 (1 + erf((x - mu) / (sigma sqrt 2))), the CDF of N(mu, sigma^2)."""
    return 0.5 * (1.0 + torch.erf((x - MU) / (SIGMA * math.sqrt(2.0))))


class LaplaceGLU(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.laplace_glu_hidden
        self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.n_layer, self.gate_std = config.n_layer, config.laplace_glu_gate_std

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the gate's inputs at unit scale (docstring), then the residual
        projection at 0.02 / sqrt(2 n_layer)."""
        nn.init.normal_(self.c_gate.weight, mean=0.0, std=self.gate_std)
        nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layer))

    def forward(self, x):
        return self.dropout(self.c_proj(laplace(self.c_gate(x)) * self.c_fc(x)))


# what laplace_glu fills in the torch GPT (torchport/model.py)
FILLS = {"mlp": LaplaceGLU}
