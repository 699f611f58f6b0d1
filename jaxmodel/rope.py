"""rope in Flax: the rotation of queries and keys by position (no parameters).

The mathematics and source: the declaration, dreamteam/components/rope.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def rope_angles(positions_T, rotary_dim: int, base: float, dtype):
    """theta_TxR2[p, i] = p * base^(-2i / rotary_dim), in dtype."""
    inv_freq_R2 = jnp.asarray(base ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim), dtype)
    return positions_T.astype(dtype)[:, None] * inv_freq_R2[None, :]


def apply_rope(x_BxHxTxK, positions_T, rotary_dim: int, base: float = 10000.0):
    """Rotate the first rotary_dim coordinates of every head vector by its position's angles."""
    theta_TxR2 = rope_angles(positions_T, rotary_dim, base, x_BxHxTxK.dtype)
    cos, sin = jnp.cos(theta_TxR2), jnp.sin(theta_TxR2)
    rot, rest = x_BxHxTxK[..., :rotary_dim], x_BxHxTxK[..., rotary_dim:]
    pairs = rot.reshape(*rot.shape[:-1], rotary_dim // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(rot.shape)
    return jnp.concatenate([rotated, rest], axis=-1)


class Rotary(nn.Module):
    """The qk_transform of rope: queries and keys rotated by their positions' angles (first `dim` coordinates;
    mla's decoupled rotary part). Keys without a position (memory_tape's) are left as they are."""

    dim: int
    base: float = 10000.0

    def __call__(self, q_BxHxTxE, k_BxHxTxE, pos_T):
        return apply_rope(q_BxHxTxE, pos_T, self.dim, self.base), apply_rope(k_BxHxTxE, pos_T, self.dim, self.base)

    def extra_keys(self, k_HxMxE):
        return k_HxMxE


# what rope fills in the Flax GPT (jaxmodel/model.py): a rotation of the qkv module's rotary width (mla's decoupled part)
FILLS = {"qk_transform": lambda cfg, qkv: Rotary(qkv.rotary_dim, cfg.rope_base)}
