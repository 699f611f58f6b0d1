"""laplace_bias: its declaration, and its initial decay rates, framework-neutral (numpy): both models start from
these numbers."""

from __future__ import annotations

import numpy as np

from dreamteam.components import Component


def initial_rates(n_head: int, exponent: float = 8.0) -> np.ndarray:
    """ALiBi's geometric rates s_h = 2^(-exponent (h + 1) / n_head), h = 0 .. n_head - 1 (float64)."""
    return 2.0 ** (-exponent * (np.arange(n_head) + 1) / n_head)


def inverse_softplus(s):
    """r with softplus(r) = s: log(expm1(s)), the pre-softplus parameter of rates s > 0."""
    return np.log(np.expm1(np.asarray(s, dtype=np.float64)))


def validate(cfg) -> list[str]:
    if not cfg.laplace_bias_exponent > 0:
        return [f"laplace_bias_exponent={cfg.laplace_bias_exponent} must be > 0"]
    return []


COMPONENT = Component(
    "laplace_bias", ("score_bias",),
    "exponential-decay (Laplace-kernel) attention bias -s_h (i - j), learned rates (ALiBi-like)",
    # the decay needs a position for every key: the tape's slots have none; the latent attention has its own
    requires=(("extra_kv", (None,)), ("qkv", (None,))), positions=True,
    options=("laplace_bias_exponent",),  # initial rates s_h = 2^(-exponent (h + 1) / n_head), ALiBi's slopes at 8
    validate=validate,
    math="""\
Head h adds to the logit of query i and key j <= i the bias
    b_h[i, j] = -s_h (i - j),      s_h = softplus(laplace_rate_h) > 0,
so that its attention weights carry the factor exp(-s_h (i - j)): the past is weighted by the kernel e^{-s t}
of a Laplace transform at rate s_h, t = i - j the distance. Keys j > i are masked. The bias depends on
positions only through i - j, so the layer is translation invariant, and there is no learned position
embedding. The rates start at ALiBi's fixed slopes, s_h = 2^(-exponent (h + 1) / H) (`initial_rates`;
laplace_rate_h = `inverse_softplus` of them), and are learned.""",
    source='Press et al. 2022, "Train short, test long" (ALiBi); Laplace transform',
    persona="pierre_simon_laplace",
)
