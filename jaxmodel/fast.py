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
from jaxmodel.model import apply_with_loads

DEFAULT_CHUNK = 64


def _chunked(h_NxD, w_VxD, t_N, chunk: int):
    """(sum_n (lse_n - z[n, t_n]), G_h = (P - Y) W, G_W = (P - Y)^T h), chunk by chunk."""
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
        loss = ((m_C + jnp.log(s_C) - zt_C) * k_C).sum()
        w_C1 = (k_C / s_C)[:, None]
        G_h_CxD = (e_CxV @ w_VxD) * w_C1  # rows of P @ W
        return G_W_VxD + e_CxV.T @ (h_CxD * w_C1), (loss, G_h_CxD)

    G_W, (losses_K, G_h) = jax.lax.scan(body, jnp.zeros_like(w_VxD), (h_KxCxD, t_KxC, k_KxC))
    G_h = G_h.reshape(K * chunk, D)[:N] - w_VxD[t_N]  # - Y @ W
    G_W = G_W.at[t_N].add(-h_NxD)  # - Y^T @ h
    return losses_K.sum(), G_h, G_W


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


def fused_loss(params, cfg: GPTConfig, idx_BxT, targets_BxT, chunk: int = DEFAULT_CHUNK, token_counts=None,
               with_loads: bool = False):
    """The fast equal of jaxmodel.model.loss_fn: final hidden states, then the chunked tied-head loss
    ((loss, moe_load) with with_loads). adaptive_softmax: the mean of its per-token -log p(target), computed
    through the clusters (jaxmodel/adaptive_softmax.py), never the V-wide output."""
    if cfg.has("adaptive_softmax"):
        nll_BxT, loads = apply_with_loads(params, cfg, idx_BxT, token_counts, targets_BxT=targets_BxT)
        return (nll_BxT.mean(), loads) if with_loads else nll_BxT.mean()
    h_BxTxD, loads = apply_with_loads(params, cfg, idx_BxT, token_counts, head=False)
    w_VxD = params["params"]["transformer"]["wte"]["weight"]
    loss = linear_cross_entropy(h_BxTxD.reshape(-1, h_BxTxD.shape[-1]), w_VxD, targets_BxT.reshape(-1), chunk)
    return (loss, loads) if with_loads else loss
