"""laplace_bias: positions through an exponential-decay (Laplace-transform) kernel on the attention logits.

Head h adds to the logit of query i and key j <= i the bias

    b_h[i, j] = -s_h (i - j),      s_h = softplus(laplace_rate_h) > 0,

so that its attention weights carry the factor exp(-s_h (i - j)): the past is weighted by the kernel
e^{-s t} of a Laplace transform at rate s_h, t = i - j the distance. Keys j > i are masked (-inf). The bias
depends on positions only through i - j, so the layer is translation invariant, and there is no learned
position embedding. ALiBi (Press et al. 2022, "Train short, test long") is the special case of fixed rates
s_h = 2^(-8 (h + 1) / H); here the rates start there and are learned (through the softplus, kept positive).
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
