"""laplace_bias's initial decay rates, framework-neutral (numpy): both models start from these numbers."""

from __future__ import annotations

import numpy as np


def initial_rates(n_head: int, exponent: float = 8.0) -> np.ndarray:
    """ALiBi's geometric rates s_h = 2^(-exponent (h + 1) / n_head), h = 0 .. n_head - 1 (float64)."""
    return 2.0 ** (-exponent * (np.arange(n_head) + 1) / n_head)


def inverse_softplus(s):
    """r with softplus(r) = s: log(expm1(s)), the pre-softplus parameter of rates s > 0."""
    return np.log(np.expm1(np.asarray(s, dtype=np.float64)))
