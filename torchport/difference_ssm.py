"""difference_ssm in torch: the difference-engine state-space token mixer, as a causal convolution for
training (a T x T Toeplitz product per channel) and as the recurrence for generation (`step`).

The mathematics, initialization and sources: the declaration, dreamteam/components/difference_ssm.py.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.components.difference_ssm import binomials, init_theta
from dreamteam.config import GPTConfig


@functools.lru_cache(maxsize=None)
def binomial_table(T: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """binomials(T, m) rounded once to dtype on the host and uploaded once per (T, m, dtype, device): the forward
    then copies nothing to the device."""
    with torch.inference_mode(False):  # a normal tensor even when first made under inference_mode
        return torch.from_numpy(binomials(T, m)).to(dtype).to(device)


def difference_coefficients(B, C):
    """c_j = C N^j B = sum_i C_i B_{i+j}, (D, m)."""
    m = B.shape[-1]
    return torch.stack([(C[:, : m - j] * B[:, j:]).sum(-1) for j in range(m)], dim=-1)


def closed_form_kernel(theta, B, C, T: int):
    """K_k = lambda^k sum_{j<m} binom(k, j) c_j for k < T, (D, T); lambda^k = exp(k log sigmoid(theta))."""
    binom = binomial_table(T, B.shape[-1], theta.dtype, theta.device)
    k = torch.arange(T, dtype=theta.dtype, device=theta.device)
    decay = torch.exp(F.logsigmoid(theta)[:, None] * k[None, :])
    return decay * torch.einsum("tj,dj->dt", binom, difference_coefficients(B, C))


def causal_convolution(u, K):
    """y_t = sum_{k<=t} K_k u_{t-k} per channel, u (B, T, D), K (D, T): the lower-triangular Toeplitz product."""
    T = u.shape[1]
    pos = torch.arange(T, device=u.device)
    lag = pos[:, None] - pos[None, :]  # t - s
    toeplitz = torch.where(lag >= 0, K[:, lag.clamp(min=0)], K.new_zeros(()))  # (D, T, T)
    return torch.einsum("dts,bsd->btd", toeplitz, u)


def recurrent_step(theta, B, C, D, u, s):
    """One turn of the Engine: s' = lambda (s + N s) + B u, y = C . s' + D u; u (B, D), s (B, D, m)."""
    shifted = torch.cat([s[..., 1:], torch.zeros_like(s[..., :1])], dim=-1)  # N s
    s_new = torch.sigmoid(theta)[:, None] * (s + shifted) + B * u[..., None]
    return (s_new * C).sum(-1) + D * u, s_new


class DifferenceSSM(nn.Module):
    """out = c_proj(ssm(c_in(x))), in place of attention in cfg.difference_ssm_layers."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        D, m = config.n_embd, config.difference_ssm_order
        self.c_in = nn.Linear(D, D, bias=config.bias)
        self.theta = nn.Parameter(torch.as_tensor(init_theta(D), dtype=torch.float32))
        self.B = nn.Parameter(torch.zeros(D, m))
        with torch.no_grad():
            self.B[:, 0] = 1.0  # the input enters the lowest difference: an exponential moving average at init
        self.C = nn.Parameter(torch.randn(D, m) / m)
        self.D = nn.Parameter(torch.ones(D))
        self.c_proj = nn.Linear(D, D, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.config = config

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the residual projection at 0.02 / sqrt(2 n_layer)."""
        nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def kernel(self, T: int):
        return closed_form_kernel(self.theta, self.B, self.C, T)

    def mix(self, u):
        """The SSM alone on u (B, T, D), no projections: causal convolution with the closed-form kernel + D u."""
        return causal_convolution(u, self.kernel(u.shape[1])) + self.D * u

    def forward(self, x):
        return self.resid_dropout(self.c_proj(self.mix(self.c_in(x))))

    def step(self, x, s):
        """Generation: one token x (B, D) through c_in, one turn of the recurrence, c_proj. Returns (out, s')."""
        y, s_new = recurrent_step(self.theta, self.B, self.C, self.D, self.c_in(x), s)
        return self.c_proj(y), s_new

    def initial_state(self, batch: int):
        return self.D.new_zeros(batch, self.D.shape[0], self.B.shape[1])

    def mixing_weights(self, T: int):
        """Anatomy's attention-like map (H, T, T): |K_{t-s}| averaged per head's channels, rows summing to 1."""
        K = self.kernel(T).abs()
        pos = torch.arange(T, device=K.device)
        lag = pos[:, None] - pos[None, :]
        a = torch.where(lag >= 0, K[:, lag.clamp(min=0)], K.new_zeros(()))
        H = self.config.n_head
        a = a.view(H, -1, T, T).mean(1)
        return a / a.sum(-1, keepdim=True).clamp(min=1e-30)


# what difference_ssm fills in the torch GPT (torchport/model.py): the mixer of its layers
FILLS = {"token_mixer": DifferenceSSM}
