"""rms_qknorm: RMSNorm (Zhang and Sennrich 2019) in place of every LayerNorm, and QK-norm (Henry et al.
2020; Dehghani et al. 2023): RMSNorm of each head's query and key before the dot product.

    RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g

Invariant to scaling x by a positive constant (up to eps); unit root-mean-square before the gain g.
QK-norm bounds the attention logits, |q.k| / sqrt(d) <= sqrt(d) * max|g_q| max|g_k|, whatever the weights do.
The query and key gains start at GPTConfig.rms_qknorm_qk_gain (default 1): with unit gains the logits of a
head of width d = 8 start within +-2.8, so attention starts soft and sharpens only as far as the gains grow;
a larger start (Henry et al. 2020 start their QK-norm scale at log2(T^2 - T)) allows sharp attention at once.
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


class QKNorm:
    """The qk_transform of rms_qknorm: each head's query and key through its RMSNorm. The gains are the
    attention's own parameters, attn.q_norm and attn.k_norm, over its head width attn.head_dim."""

    def __init__(self, attn: nn.Module, config):
        attn.q_norm = RMSNorm(attn.head_dim, config.rms_eps, config.rms_qknorm_qk_gain)
        attn.k_norm = RMSNorm(attn.head_dim, config.rms_eps, config.rms_qknorm_qk_gain)

    def __call__(self, attn, q, k, pos):
        return attn.q_norm(q), attn.k_norm(k)

    def keys_without_position(self, attn, k):
        """Keys that have no position (memory_tape's) are normalized like the context's."""
        return attn.k_norm(k)
