"""rms_qknorm in Flax: the RMSNorm module, used for every norm and for the per-head query and key norms.

The mathematics and sources: the declaration, dreamteam/components/rms_qknorm.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxmodel.layers import LayerNorm


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


class NoQKNorm(nn.Module):
    """The qk_transform with rms_qknorm_qk off: queries and keys pass unchanged (no parameters)."""

    def __call__(self, q_BxHxTxE, k_BxHxTxE, pos_T):
        return q_BxHxTxE, k_BxHxTxE

    def extra_keys(self, k_HxMxE):
        return k_HxMxE


# what rms_qknorm fills in the Flax GPT (jaxmodel/model.py): every norm, and a qk transform of the attention
FILLS = {
    # with rms_qknorm_rmsnorm off, the model's own LayerNorm (jaxmodel/model.py's layer_norm)
    "norm": lambda cfg, name=None: RMSNorm(cfg.rms_qknorm_eps, name=name) if cfg.rms_qknorm_rmsnorm
    else LayerNorm(cfg.bias, name=name),
    "qk_transform": lambda cfg, qkv: QKNorm(cfg.rms_qknorm_eps, cfg.rms_qknorm_qk_gain) if cfg.rms_qknorm_qk else NoQKNorm(),
}
