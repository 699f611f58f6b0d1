"""difference_ssm: a token mixer built on Babbage's Difference Engine. The declaration and the framework-neutral
numbers both modules use (the binomial table, the initial theta); the modules are jaxmodel/difference_ssm.py and
torchport/difference_ssm.py."""

from __future__ import annotations

import math

import numpy as np

from dreamteam.components import Component


def binomials(T: int, m: int) -> np.ndarray:
    """binom(k, j) for k < T, j < m, (T, m) float64 (exact integers below 2^53)."""
    return np.array([[math.comb(k, j) for j in range(m)] for k in range(T)], dtype=np.float64)


def init_theta(D: int) -> np.ndarray:
    """theta = logit(lambda), lambda = exp(-1/tau), tau log-spaced over [1.5, 32] tokens; (D,) float64 holding
    float32 values. numpy's vectorized exp and log round differently, by an ulp, on processors with and without
    AVX-512; rounded to float32 they agree, so the initial weights are the same on every machine in both dtypes."""
    tau = np.exp(np.linspace(math.log(1.5), math.log(32.0), D))
    lam = np.exp(-1.0 / tau)
    return (np.log(lam) - np.log1p(-lam)).astype(np.float32).astype(np.float64)


def validate(cfg) -> list[str]:
    if not cfg.has("difference_ssm"):
        return []
    problems = []
    layers = cfg.difference_ssm_layers
    if not isinstance(layers, tuple) or not all(isinstance(i, int) and 0 <= i < cfg.n_layer for i in layers):
        problems.append(f"difference_ssm_layers={layers!r} must be a tuple of layer indices in [0, {cfg.n_layer})")
    if not isinstance(cfg.difference_ssm_order, int) or cfg.difference_ssm_order < 1:
        problems.append(f"difference_ssm_order={cfg.difference_ssm_order!r} must be an int >= 1")
    return problems


COMPONENT = Component(
    "difference_ssm", ("token_mixer",),
    "difference-engine state-space token mixer in place of attention in some layers",
    # the layers whose attention it replaces, and the order m (finite differences per channel)
    options=("difference_ssm_layers", "difference_ssm_order"),
    validate=validate,
    math="""\
The Engine tabulates a polynomial by keeping its value and its finite differences on columns of wheels and,
at every turn, adding each column's next difference into it. Each channel d of u = c_in(x) keeps m such
differences, a state s in R^m, and makes one turn per token, damped by lambda_d in (0, 1):
    s_t = A s_{t-1} + B u_t,     y_t = C . s_t + D u_t,     A = lambda (I + N),   lambda = sigmoid(theta)
    out = c_proj(y)
N is the upper shift ((N s)_i = s_{i+1}), nilpotent, so A^k = lambda^k sum_{j<m} binom(k, j) N^j and, with
c_j = sum_i C_i B_{i+j} (= C N^j B), the convolution kernel has a closed form:
    K_k = C A^k B = lambda^k sum_{j<m} binom(k, j) c_j,     y_t = sum_{k<=t} K_k u_{t-k} + D u_t.
Training computes that causal convolution for all t at once (a T x T Toeplitz product per channel, exact);
generation runs the recurrence, O(D m) per token. Parameters per layer: theta (D,), B (D, m), C (D, m),
D (D,), c_in and c_proj (D, D). Initialization: lambda_d = exp(-1 / tau_d), time constants tau log-spaced over
[1.5, 32] tokens; B = e_0 (the input enters the lowest difference), C ~ normal(0, 1/m), D = 1: at init each
channel is an exponential moving average plus the identity; the higher differences are learned.""",
    source="Babbage's Difference Engine; Gu et al. 2021 (S4) and Gupta et al. 2022 (DSS): the convolution/recurrence "
           "duality of linear time-invariant state-space layers",
    persona="charles_babbage",
)
