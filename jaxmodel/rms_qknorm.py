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

import flax.linen as nn
import jax


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis; weight starts at `gain` (1 by default)."""

    eps: float = 1e-6
    gain: float = 1.0

    @nn.compact
    def __call__(self, x_NxD):
        g_D = self.param("weight", nn.initializers.constant(self.gain), (x_NxD.shape[-1],))
        return x_NxD * jax.lax.rsqrt((x_NxD * x_NxD).mean(-1, keepdims=True) + self.eps) * g_D


class QKNorm(nn.Module):
    """The qk_transform of rms_qknorm: q_norm(q), k_norm(k) per head, gains starting at `gain`. Keys that
    have no position (memory_tape's) pass k_norm too, so that every score stays on one scale."""

    eps: float = 1e-6
    gain: float = 1.0

    def setup(self):
        self.q_norm = RMSNorm(self.eps, self.gain)
        self.k_norm = RMSNorm(self.eps, self.gain)

    def __call__(self, q_BxHxTxE, k_BxHxTxE, pos_T):
        del pos_T  # the norm is the same at every position
        return self.q_norm(q_BxHxTxE), self.k_norm(k_BxHxTxE)

    def extra_keys(self, k_HxMxE):
        return self.k_norm(k_HxMxE)
