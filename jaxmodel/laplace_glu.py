"""laplace_glu in Flax: the MLP gated by MEGA's Laplace function; it initializes its own gate.

The mathematics, the initialization and the sources: the declaration, dreamteam/components/laplace_glu.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear

MU = math.sqrt(0.5)
SIGMA = math.sqrt(1.0 / (4.0 * math.pi))


def laplace(x):
    """MEGA's Laplace function 0.5 (1 + erf((x - mu) / (sigma sqrt 2))), the CDF of N(mu, sigma^2)."""
    return 0.5 * (1.0 + jax.scipy.special.erf((x - MU) / (SIGMA * math.sqrt(2.0))))


class LaplaceGLU(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        D, F = x_BxTxD.shape[-1], cfg.laplace_glu_hidden
        h_BxTxF = laplace(Linear(F, cfg.bias, std=cfg.laplace_glu_gate_std, name="c_gate")(x_BxTxD)) * Linear(F, cfg.bias, name="c_fc")(x_BxTxD)
        y_BxTxD = Linear(D, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer), name="c_proj")(h_BxTxF)
        return nn.Dropout(cfg.dropout)(y_BxTxD, deterministic=deterministic)


# what laplace_glu fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"mlp": LaplaceGLU}
