"""dyt in Flax: Dynamic Tanh, the module in every norm's place.

The mathematics and source: the declaration, dreamteam/components/dyt.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class DyT(nn.Module):
    """weight * tanh(alpha * x) (+ bias) elementwise; alpha one scalar starting at `alpha`, weight at 1, bias at 0."""

    use_bias: bool = False
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x_NxD):
        d = x_NxD.shape[-1]
        alpha_1 = self.param("alpha", nn.initializers.constant(self.alpha), (1,))
        y_NxD = jnp.tanh(alpha_1 * x_NxD) * self.param("weight", nn.initializers.ones, (d,))
        if self.use_bias:
            y_NxD = y_NxD + self.param("bias", nn.initializers.zeros, (d,))
        return y_NxD


# what dyt fills in the Flax GPT (jaxmodel/model.py): every norm
FILLS = {"norm": lambda cfg, name=None: DyT(cfg.bias, cfg.dyt_alpha, name=name)}
