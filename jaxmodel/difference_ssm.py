"""difference_ssm in Flax: the difference-engine state-space token mixer, as a causal convolution for
training (a T x T Toeplitz product per channel) and as the recurrence for generation (`step`).

The mathematics, initialization and sources: the declaration, dreamteam/components/difference_ssm.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamteam.components.difference_ssm import binomials, init_theta
from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear


def difference_coefficients(B_DxM, C_DxM):
    """c_j = C N^j B = sum_i C_i B_{i+j}, (D, m)."""
    m = B_DxM.shape[-1]
    return jnp.stack([(C_DxM[:, : m - j] * B_DxM[:, j:]).sum(-1) for j in range(m)], axis=-1)


def closed_form_kernel(theta_D, B_DxM, C_DxM, T: int):
    """K_k = lambda^k sum_{j<m} binom(k, j) c_j for k < T, (D, T); lambda^k = exp(k log sigmoid(theta))."""
    m = B_DxM.shape[-1]
    binom_TxM = jnp.asarray(binomials(T, m), dtype=theta_D.dtype)
    k_T = jnp.arange(T, dtype=theta_D.dtype)
    decay_DxT = jnp.exp(jax.nn.log_sigmoid(theta_D)[:, None] * k_T[None, :])
    return decay_DxT * jnp.einsum("tj,dj->dt", binom_TxM, difference_coefficients(B_DxM, C_DxM))


def causal_convolution(u_BxTxD, K_DxT):
    """y_t = sum_{k<=t} K_k u_{t-k} per channel, as the product with the lower-triangular Toeplitz matrix."""
    T = u_BxTxD.shape[1]
    lag_TxT = jnp.arange(T)[:, None] - jnp.arange(T)[None, :]  # t - s
    toeplitz_DxTxT = jnp.where(lag_TxT >= 0, K_DxT[:, jnp.maximum(lag_TxT, 0)], 0.0)
    return jnp.einsum("dts,bsd->btd", toeplitz_DxTxT, u_BxTxD)


def recurrent_step(theta_D, B_DxM, C_DxM, D_D, u_BxD, s_BxDxM):
    """One turn of the Engine: s' = lambda (s + N s) + B u, y = C . s' + D u. Returns (y_BxD, s'_BxDxM)."""
    lam_D = jax.nn.sigmoid(theta_D)
    shifted_BxDxM = jnp.concatenate([s_BxDxM[..., 1:], jnp.zeros_like(s_BxDxM[..., :1])], axis=-1)  # N s
    s_new = lam_D[:, None] * (s_BxDxM + shifted_BxDxM) + B_DxM * u_BxD[..., None]
    return (s_new * C_DxM).sum(-1) + D_D * u_BxD, s_new


class DifferenceSSM(nn.Module):
    """out = c_proj(ssm(c_in(x))); ssm as in the module docstring. Parameters: c_in, theta, B, C, D, c_proj."""

    cfg: GPTConfig

    def setup(self):
        cfg = self.cfg
        Dm, m = cfg.n_embd, cfg.difference_ssm_order
        self.c_in = Linear(Dm, cfg.bias)
        self.c_proj = Linear(Dm, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.theta = self.param("theta", lambda key, shape: jnp.asarray(init_theta(shape[0])), (Dm,))
        self.B = self.param("B", lambda key, shape: jnp.zeros(shape).at[:, 0].set(1.0), (Dm, m))
        self.C = self.param("C", nn.initializers.normal(stddev=1.0 / m), (Dm, m))
        self.D = self.param("D", nn.initializers.ones, (Dm,))
        self.dropout = nn.Dropout(cfg.dropout)

    def kernel(self, T: int):
        return closed_form_kernel(self.theta, self.B, self.C, T)

    def mix(self, u_BxTxD):
        """The SSM alone on u (no projections): the causal convolution with the closed-form kernel + D u."""
        return causal_convolution(u_BxTxD, self.kernel(u_BxTxD.shape[1])) + self.D * u_BxTxD

    def __call__(self, x_BxTxD, deterministic: bool = True):
        u_BxTxD = self.c_in(x_BxTxD)
        if self.is_mutable_collection("intermediates"):  # anatomy: how much output t draws on input s
            B, T, _ = x_BxTxD.shape
            w_HxTxT = mixing_weights(self.kernel(T), self.cfg.n_head)
            self.sow("intermediates", "attention_weights", jnp.broadcast_to(w_HxTxT, (B,) + w_HxTxT.shape))
        y_BxTxD = self.c_proj(self.mix(u_BxTxD))
        return self.dropout(y_BxTxD, deterministic=deterministic)

    def step(self, x_BxD, s_BxDxM):
        """Generation: one token through c_in, one turn of the recurrence, c_proj. Returns (out_BxD, s')."""
        y_BxD, s_new = recurrent_step(self.theta, self.B, self.C, self.D, self.c_in(x_BxD), s_BxDxM)
        return self.c_proj(y_BxD), s_new


def mixing_weights(K_DxT, n_head: int):
    """An attention-like map of the kernel for anatomy drawings, (H, T, T): row t is |K_{t-s}| (s <= t)
    averaged over the channels of head h's width and normalized to sum 1. (It leaves out c_in, D and the
    signs, which the kernel alone cannot show.)"""
    D, T = K_DxT.shape
    lag_TxT = jnp.arange(T)[:, None] - jnp.arange(T)[None, :]
    a_DxTxT = jnp.where(lag_TxT >= 0, jnp.abs(K_DxT)[:, jnp.maximum(lag_TxT, 0)], 0.0)
    a_HxTxT = a_DxTxT.reshape(n_head, D // n_head, T, T).mean(1)
    return a_HxTxT / jnp.maximum(a_HxTxT.sum(-1, keepdims=True), 1e-30)


# what difference_ssm fills in the Flax GPT (jaxmodel/model.py): the mixer of its layers
FILLS = {"token_mixer": DifferenceSSM}
