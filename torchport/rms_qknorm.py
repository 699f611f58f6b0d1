"""rms_qknorm in torch: the RMSNorm module, used for every norm and for the per-head query and key norms.

The mathematics and sources: the declaration, dreamteam/components/rms_qknorm.py.
"""

from __future__ import annotations

import torch
from torch import nn

from torchport.model import layer_norm


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
        attn.q_norm = RMSNorm(attn.head_dim, config.rms_qknorm_eps, config.rms_qknorm_qk_gain)
        attn.k_norm = RMSNorm(attn.head_dim, config.rms_qknorm_eps, config.rms_qknorm_qk_gain)

    def __call__(self, attn, q, k, pos):
        return attn.q_norm(q), attn.k_norm(k)

    def keys_without_position(self, attn, k):
        """Keys that have no position (memory_tape's) are normalized like the context's."""
        return attn.k_norm(k)


class NoQKNorm:
    """The qk_transform with rms_qknorm_qk off: queries and keys pass unchanged (no parameters)."""

    def __call__(self, attn, q, k, pos):
        return q, k

    def keys_without_position(self, attn, k):
        return k


def norm(config):
    """The norm slot: RMSNorm, or with rms_qknorm_rmsnorm off the model's own LayerNorm."""
    return RMSNorm(config.n_embd, config.rms_qknorm_eps) if config.rms_qknorm_rmsnorm else layer_norm(config)


# what rms_qknorm fills in the torch GPT (torchport/model.py): every norm, and a qk transform of the attention
FILLS = {"norm": norm,
         "qk_transform": lambda attn, config: QKNorm(attn, config) if config.rms_qknorm_qk else NoQKNorm()}
