"""laplace_bias in Flax: the exponential-decay attention bias with learned rates (initial rates from
dreamteam/components/laplace_bias.py, which also states the mathematics and source).
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamteam.config import GPTConfig
from dreamteam.components.laplace_bias import initial_rates, inverse_softplus


def laplace_bias(s_H, pos_T):
    """The (H, T, T) bias: -s_h (pos_i - pos_j) where pos_j <= pos_i, -inf above (causal).

    The distances are formed in the positions' own type (integers: exact) before the product with s."""
    d_TxT = pos_T[:, None] - pos_T[None, :]
    d_TxT = d_TxT.astype(s_H.dtype) if jnp.issubdtype(d_TxT.dtype, jnp.integer) else d_TxT
    causal_TxT = d_TxT >= 0
    bias_HxTxT = -s_H[:, None, None] * jnp.where(causal_TxT, d_TxT, 0)[None]  # no 0 * inf above the diagonal
    return jnp.where(causal_TxT[None], bias_HxTxT, -jnp.inf)


def decay_bias(s_H, qpos_Q, kpos_K):
    """The score_bias of queries at positions qpos (any shape ...Q) and keys at kpos (...K): -s_h (i - j), shape
    (H, ...Q, K); 0 where j > i (the causal mask hides those scores). The naive attention asks it for the whole
    T x T square, the tiled one block by block; the distances are exact integers before the product with s."""
    d_QxK = qpos_Q[..., :, None] - kpos_K[..., None, :]
    d_QxK = d_QxK.astype(s_H.dtype) if jnp.issubdtype(d_QxK.dtype, jnp.integer) else d_QxK
    return -s_H.reshape((-1,) + (1,) * d_QxK.ndim) * jnp.where(d_QxK >= 0, d_QxK, 0)[None]


class LaplaceBias(nn.Module):
    """The score_bias slot's laplace_bias: its parameter `laplace_rate` (H,), pre-softplus, lives in the
    attention module's scope (h_i/attn/laplace_rate). Returns bias(qpos, kpos) = decay_bias(softplus(rate), ...)."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self):
        H = self.cfg.n_head
        rate_H = self.param("laplace_rate", rate_init(H, self.cfg.laplace_bias_exponent), (H,))
        return partial(decay_bias, jax.nn.softplus(rate_H))


def rate_init(n_head: int, exponent: float = 8.0):
    """Initializer of the pre-softplus parameter `laplace_rate` (n_head,): ALiBi's slopes after the softplus."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.asarray(inverse_softplus(initial_rates(n_head, exponent)), dtype).reshape(shape)

    return init


# what laplace_bias fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"score_bias": LaplaceBias}
