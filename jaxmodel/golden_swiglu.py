"""golden_swiglu in Flax: the SwiGLU MLP of golden-ratio width.

The mathematics and source: the declaration, dreamteam/components/golden_swiglu.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear


class GoldenSwiGLU(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        D, F = x_BxTxD.shape[-1], cfg.swiglu_hidden
        h_BxTxF = jax.nn.silu(Linear(F, cfg.bias, name="c_gate")(x_BxTxD)) * Linear(F, cfg.bias, name="c_fc")(x_BxTxD)
        y_BxTxD = Linear(D, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer), name="c_proj")(h_BxTxF)
        return nn.Dropout(cfg.dropout)(y_BxTxD, deterministic=deterministic)


# what golden_swiglu fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"mlp": GoldenSwiGLU}
