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

import torch
import torch.nn as nn

from dreamteam.laplace_rates import initial_rates, inverse_softplus


def rates(laplace_rate_H: torch.Tensor) -> torch.Tensor:
    """s_H = softplus(laplace_rate_H) = log(1 + e^r), without torch's threshold (as jax.nn.softplus)."""
    return torch.logaddexp(laplace_rate_H, torch.zeros_like(laplace_rate_H))


def laplace_bias(s_H: torch.Tensor, pos_T: torch.Tensor) -> torch.Tensor:
    """The (H, T, T) bias: -s_h (pos_i - pos_j) where pos_j <= pos_i, -inf above (causal).

    The distances are formed in the positions' own type (integers: exact) before the product with s."""
    d_TxT = pos_T[:, None] - pos_T[None, :]
    causal_TxT = d_TxT >= 0
    d_TxT = torch.where(causal_TxT, d_TxT, torch.zeros_like(d_TxT)).to(s_H.dtype)  # no 0 * inf above the diagonal
    bias_HxTxT = -s_H[:, None, None] * d_TxT
    return bias_HxTxT.masked_fill(~causal_TxT, float("-inf"))


class LaplaceBias:
    """The score_bias slot filled by laplace_bias: the pre-softplus rates, one per head, are the attention's own
    parameter attn.laplace_rate, starting at ALiBi's slopes."""

    def __init__(self, attn: nn.Module, config):
        init = inverse_softplus(initial_rates(config.n_head, config.laplace_bias_exponent))
        attn.laplace_rate = nn.Parameter(torch.tensor(init, dtype=torch.get_default_dtype()))

    def __call__(self, attn, pos_T):
        return laplace_bias(rates(attn.laplace_rate), pos_T)
