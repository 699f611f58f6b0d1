"""golden_swiglu: the MLP as SwiGLU (Shazeer 2020, "GLU variants improve Transformer") of golden-ratio width.

    y = c_proj( silu(c_gate x) * (c_fc x) ),   silu(z) = z * sigmoid(z)

hidden width F = round(phi^2 * D), phi = (1 + sqrt 5) / 2, so the three matrices hold 3 * 2.618 D^2 = 7.85 D^2
parameters: the proportion of the 8 D^2 of the 4x GELU MLP.
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
