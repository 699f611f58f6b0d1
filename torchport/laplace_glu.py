"""laplace_glu: the MLP gated by the Laplace function of MEGA (Ma et al. 2022, "Mega: moving average
equipped gated attention"), a GLU (Dauphin et al. 2017; Shazeer 2020) with a Gaussian-CDF gate:

    f(x) = 0.5 * (1 + erf((x - mu) / (sigma sqrt 2))),   mu = sqrt(1/2),  sigma = sqrt(1/(4 pi))
    y = c_proj( f(c_gate x) * (c_fc x) )

f is the CDF of N(mu, sigma^2), so f' is the Gaussian density, f(mu) = 1/2, and f rises from 0 to 1 around mu;
MEGA chose mu, sigma so that f approximates relu^2 near the origin while staying bounded (stable).
Hidden width F = round(8 D / 3): the three D x F matrices hold ~ the 8 D^2 parameters of the 4x GELU MLP.

Initialization: c_gate is drawn with std laplace_glu_gate_scale / sqrt(D) (1 / sqrt(32) = 0.177; c_fc and
c_proj keep GPT-2's 0.02 and 0.02 / sqrt(2 n_layer)). f is shaped for inputs of unit scale (its ramp sits at
mu = 0.71, width sigma = 0.28); at GPT-2's 0.02 the gate's inputs would have std ~0.11 and every gate would
start nearly shut (f(0) = 0.006), leaving c_proj with gradients of ~1e-9, at the scale of Adam's epsilon.
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
