"""A fast, exact training loss for the Flax GPT: the tied output head and its cross-entropy, fused and chunked.

The twin of torchport/fast.py. Over the N = B*T tokens, with z = h W^T the logits, P = softmax(z), Y = onehot(t):

    loss = (1/N) sum_n [ lse_n - z[n, t_n] ],   d loss/d h = (P - Y) W / N,   d loss/d W = (P - Y)^T h / N

`linear_cross_entropy` runs a `lax.scan` over chunks of C tokens, each holding only a C x V block of logits,
and forms the gradients in the forward pass while the block is at hand (P = E / s with E = exp(z - max z)
and s = sum E, applied to the small products), so neither pass ever holds the N x V logits; a
`jax.custom_vjp` hands the saved gradients to the backward pass, which only scales them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from dreamteam.config import GPTConfig
from jaxmodel.model import GPT

DEFAULT_CHUNK = 64


def _chunked(h_NxD, w_VxD, t_N, chunk: int, eps: float = 0.0, prior_V=None, z_loss: float = 0.0):
    """(sum_n (lse_n - z[n, t_n]), G_h = (P - Y) W, G_W = (P - Y)^T h), chunk by chunk.

    With eps, prior_V = pi and z_loss = a: succession_objective's loss, per token
    (1 - eps)(lse - z_t) + eps sum_v pi_v (lse - z_v) + a lse^2, of gradient (1 + 2 a lse) P - (1 - eps) Y - eps pi
    in z (torchport/fast.py's _chunked, the same terms)."""
    N, D = h_NxD.shape
    K = -(-N // chunk)  # chunks, the last one padded with zero-weight rows
    pad = K * chunk - N
    k_N = jnp.ones((N,), h_NxD.dtype)
    h_KxCxD = jnp.pad(h_NxD, ((0, pad), (0, 0))).reshape(K, chunk, D)
    t_KxC = jnp.pad(t_N, (0, pad)).reshape(K, chunk)
    k_KxC = jnp.pad(k_N, (0, pad)).reshape(K, chunk)

    def body(G_W_VxD, xs):
        h_CxD, t_C, k_C = xs
        z_CxV = h_CxD @ w_VxD.T
        m_C = z_CxV.max(-1)
        e_CxV = jnp.exp(z_CxV - m_C[:, None])
        s_C = e_CxV.sum(-1)
        zt_C = jnp.take_along_axis(z_CxV, t_C[:, None], axis=1)[:, 0]
        lse_C = m_C + jnp.log(s_C)
        loss = ((lse_C - (1.0 - eps) * zt_C + z_loss * lse_C * lse_C) * k_C).sum()
        w_C1 = (k_C / s_C * (1.0 + 2.0 * z_loss * lse_C))[:, None]  # z-loss: P's rows scaled by 1 + 2 a lse
        G_h_CxD = (e_CxV @ w_VxD) * w_C1  # rows of P @ W
        return G_W_VxD + e_CxV.T @ (h_CxD * w_C1), (loss, G_h_CxD)

    G_W, (losses_K, G_h) = jax.lax.scan(body, jnp.zeros_like(w_VxD), (h_KxCxD, t_KxC, k_KxC))
    G_h = G_h.reshape(K * chunk, D)[:N] - (1.0 - eps) * w_VxD[t_N]  # - (1 - eps) Y @ W
    G_W = G_W.at[t_N].add(-(1.0 - eps) * h_NxD)  # - (1 - eps) Y^T @ h
    total = losses_K.sum()
    if eps:  # the prior's terms are rank one: sum_v pi_v z_v = h . (W^T pi)
        wpi_D = prior_V.astype(w_VxD.dtype) @ w_VxD
        total = total - eps * (h_NxD @ wpi_D).sum()
        G_h = G_h - eps * wpi_D[None, :]
        G_W = G_W - eps * jnp.outer(prior_V.astype(w_VxD.dtype), h_NxD.sum(0))
    return total, G_h, G_W


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def linear_cross_entropy(h_NxD, w_VxD, t_N, chunk: int = DEFAULT_CHUNK):
    """mean_n CE(h_n W^T, t_n), equal to optax's softmax cross-entropy of the full logits."""
    total, _, _ = _chunked(h_NxD, w_VxD, t_N, chunk)
    return total / h_NxD.shape[0]


def _fwd(h_NxD, w_VxD, t_N, chunk):
    total, G_h, G_W = _chunked(h_NxD, w_VxD, t_N, chunk)
    return total / h_NxD.shape[0], (G_h, G_W, h_NxD.shape[0])


def _bwd(chunk, residuals, g):
    G_h, G_W, n = residuals
    return G_h * (g / n), G_W * (g / n), None


linear_cross_entropy.defvjp(_fwd, _bwd)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def linear_succession_loss(h_NxD, w_VxD, t_N, prior_V, chunk: int = DEFAULT_CHUNK, eps: float = 0.0,
                           z_loss: float = 0.0):
    """succession_objective's loss of the tied head, chunked (jaxmodel/succession_objective.py is the eager form)."""
    total, _, _ = _chunked(h_NxD, w_VxD, t_N, chunk, eps, prior_V, z_loss)
    return total / h_NxD.shape[0]


def _succ_fwd(h_NxD, w_VxD, t_N, prior_V, chunk, eps, z_loss):
    total, G_h, G_W = _chunked(h_NxD, w_VxD, t_N, chunk, eps, prior_V, z_loss)
    return total / h_NxD.shape[0], (G_h, G_W, h_NxD.shape[0], prior_V)


def _succ_bwd(chunk, eps, z_loss, residuals, g):
    G_h, G_W, n, prior_V = residuals
    return G_h * (g / n), G_W * (g / n), None, jnp.zeros_like(prior_V)  # the prior is a constant


linear_succession_loss.defvjp(_succ_fwd, _succ_bwd)


def fused_loss(params, cfg: GPTConfig, idx_BxT, targets_BxT, chunk: int = DEFAULT_CHUNK, smoothing_eps: float = 0.0,
               prior=None, z_loss: float = 0.0):
    """The fast equal of jaxmodel.model.loss_fn: final hidden states, then the chunked tied-head loss.
    smoothing_eps, prior, z_loss: succession_objective's loss instead (linear_succession_loss)."""
    h_BxTxD = GPT(cfg).apply(params, idx_BxT, head=False)
    w_VxD = params["params"]["transformer"]["wte"]["weight"]
    h_NxD, t_N = h_BxTxD.reshape(-1, h_BxTxD.shape[-1]), targets_BxT.reshape(-1)
    if smoothing_eps or z_loss:
        prior_V = jnp.zeros(w_VxD.shape[0], w_VxD.dtype) if prior is None else jnp.asarray(prior, w_VxD.dtype)
        if smoothing_eps and prior is None:
            raise ValueError("smoothing_eps > 0 needs the prior (a (V,) array of probabilities)")
        return linear_succession_loss(h_NxD, w_VxD, t_N, prior_V, chunk, float(smoothing_eps), float(z_loss))
    return linear_cross_entropy(h_NxD, w_VxD, t_N, chunk)
