"""laplace_bias in torch: the exponential-decay attention bias with learned rates (initial rates from
dreamteam/components/laplace_bias.py, which also states the mathematics and source).
"""

from __future__ import annotations

import torch


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
