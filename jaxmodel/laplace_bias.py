"""laplace_bias in Flax: the exponential-decay attention bias with learned rates (initial rates from
dreamteam/components/laplace_bias.py, which also states the mathematics and source).
"""

from __future__ import annotations

import jax.numpy as jnp

from dreamteam.components.laplace_bias import initial_rates, inverse_softplus


def laplace_bias(s_H, pos_T):
    """The (H, T, T) bias: -s_h (pos_i - pos_j) where pos_j <= pos_i, -inf above (causal).

    The distances are formed in the positions' own type (integers: exact) before the product with s."""
    d_TxT = pos_T[:, None] - pos_T[None, :]
    d_TxT = d_TxT.astype(s_H.dtype) if jnp.issubdtype(d_TxT.dtype, jnp.integer) else d_TxT
    causal_TxT = d_TxT >= 0
    bias_HxTxT = -s_H[:, None, None] * jnp.where(causal_TxT, d_TxT, 0)[None]  # no 0 * inf above the diagonal
    return jnp.where(causal_TxT[None], bias_HxTxT, -jnp.inf)


def rate_init(n_head: int, exponent: float = 8.0):
    """Initializer of the pre-softplus parameter `laplace_rate` (n_head,): ALiBi's slopes after the softplus."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.asarray(inverse_softplus(initial_rates(n_head, exponent)), dtype).reshape(shape)

    return init
