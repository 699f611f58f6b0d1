"""rms_qknorm in Flax: the RMSNorm module, used for every norm and for the per-head query and key norms.

The mathematics and sources: the declaration, dreamteam/components/rms_qknorm.py.
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
