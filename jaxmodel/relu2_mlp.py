"""relu2_mlp in Flax: the MLP with the squared ReLU.

The mathematics and source: the declaration, dreamteam/components/relu2_mlp.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear


def relu2(z):
    """relu(z)^2, whose derivative is 2 relu(z)."""
    return jnp.square(jax.nn.relu(z))


class Relu2MLP(nn.Module):
    """c_proj(relu(c_fc(x))^2), hidden width 4D: parameters, names and initialization of the baseline MLP."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        D = x_BxTxD.shape[-1]
        h_BxTxF = relu2(Linear(4 * D, cfg.bias, name="c_fc")(x_BxTxD))
        y_BxTxD = Linear(D, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer), name="c_proj")(h_BxTxF)
        return nn.Dropout(cfg.dropout)(y_BxTxD, deterministic=deterministic)


# what relu2_mlp fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"mlp": Relu2MLP}
