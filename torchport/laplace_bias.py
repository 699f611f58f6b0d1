"""laplace_bias in torch: the exponential-decay attention bias with learned rates (initial rates from
dreamteam/components/laplace_bias.py, which also states the mathematics and source).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dreamteam.components.laplace_bias import initial_rates, inverse_softplus


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


# what laplace_bias fills in the torch GPT (torchport/model.py)
FILLS = {"score_bias": LaplaceBias}
