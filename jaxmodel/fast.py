"""A fast, exact training loss for the Flax GPT: the tied output head and its cross-entropy, fused and chunked.

The twin of torchport/fast.py. Over the N = B*T tokens, with z = h W^T the logits, P = softmax(z), Y = onehot(t):

    loss = (1/N) sum_n [ lse_n - z[n, t_n] ],   d loss/d h = (P - Y) W / N,   d loss/d W = (P - Y)^T h / N

`linear_cross_entropy` runs a `lax.scan` over chunks of C tokens, each holding only a C x V block of logits,
and forms the gradients in the forward pass while the block is at hand (P = E / s with E = exp(z - max z)
and s = sum E, applied to the small products), so neither pass ever holds the N x V logits; a
`jax.custom_vjp` hands the saved gradients to the backward pass, which only scales them.

With an output bias b (good_turing_prior's lm_head/bias): z = h W^T + b and d loss/d b = sum_n (P_n - Y_n) / N,
accumulated per chunk as E^T (1 / s), then minus the target counts.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from dreamteam.config import GPTConfig
from jaxmodel.model import GPT, apply_with_loads

DEFAULT_CHUNK = 64


def _chunked(h_NxD, w_VxD, t_N, chunk: int, b_V=None, eps: float = 0.0, prior_V=None, z_loss: float = 0.0):
    """(sum_n (lse_n - z[n, t_n]), G_h = (P - Y) W, G_W = (P - Y)^T h, G_b = sum_n (P - Y)_n or None),
    chunk by chunk; b_V the output bias or None.

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

    def body(carry, xs):
        G_W_VxD, G_b_V = carry
        h_CxD, t_C, k_C = xs
        z_CxV = h_CxD @ w_VxD.T if b_V is None else h_CxD @ w_VxD.T + b_V
        m_C = z_CxV.max(-1)
        e_CxV = jnp.exp(z_CxV - m_C[:, None])
        s_C = e_CxV.sum(-1)
        zt_C = jnp.take_along_axis(z_CxV, t_C[:, None], axis=1)[:, 0]
        lse_C = m_C + jnp.log(s_C)
        loss = ((lse_C - (1.0 - eps) * zt_C + z_loss * lse_C * lse_C) * k_C).sum()
        w_C1 = (k_C / s_C * (1.0 + 2.0 * z_loss * lse_C))[:, None]  # z-loss: P's rows scaled by 1 + 2 a lse
        G_h_CxD = (e_CxV @ w_VxD) * w_C1  # rows of P @ W
        G_b_V = None if b_V is None else G_b_V + e_CxV.T @ w_C1[:, 0]  # column sums of P
        return (G_W_VxD + e_CxV.T @ (h_CxD * w_C1), G_b_V), (loss, G_h_CxD)

    G_b0 = None if b_V is None else jnp.zeros_like(b_V)
    (G_W, G_b), (losses_K, G_h) = jax.lax.scan(body, (jnp.zeros_like(w_VxD), G_b0), (h_KxCxD, t_KxC, k_KxC))
    G_h = G_h.reshape(K * chunk, D)[:N] - (1.0 - eps) * w_VxD[t_N]  # - (1 - eps) Y @ W
    G_W = G_W.at[t_N].add(-(1.0 - eps) * h_NxD)  # - (1 - eps) Y^T @ h
    if G_b is not None:
        G_b = G_b.at[t_N].add(-(1.0 - eps))  # - (1 - eps) column sums of Y
    total = losses_K.sum()
    if eps:  # the prior's terms are rank one: sum_v pi_v z_v = h . (W^T pi) (+ pi . b)
        pi_V = prior_V.astype(w_VxD.dtype)
        wpi_D = pi_V @ w_VxD
        total = total - eps * (h_NxD @ wpi_D).sum()
        G_h = G_h - eps * wpi_D[None, :]
        G_W = G_W - eps * jnp.outer(pi_V, h_NxD.sum(0))
        if G_b is not None:
            total = total - eps * N * (pi_V @ b_V)
            G_b = G_b - eps * N * pi_V
    return total, G_h, G_W, G_b


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def linear_cross_entropy(h_NxD, w_VxD, t_N, chunk: int = DEFAULT_CHUNK):
    """mean_n CE(h_n W^T, t_n), equal to optax's softmax cross-entropy of the full logits."""
    total = _chunked(h_NxD, w_VxD, t_N, chunk)[0]
    return total / h_NxD.shape[0]


def _fwd(h_NxD, w_VxD, t_N, chunk):
    total, G_h, G_W, _ = _chunked(h_NxD, w_VxD, t_N, chunk)
    return total / h_NxD.shape[0], (G_h, G_W, h_NxD.shape[0])


def _bwd(chunk, residuals, g):
    G_h, G_W, n = residuals
    return G_h * (g / n), G_W * (g / n), None


linear_cross_entropy.defvjp(_fwd, _bwd)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def linear_cross_entropy_bias(h_NxD, w_VxD, b_V, t_N, chunk: int = DEFAULT_CHUNK):
    """mean_n CE(h_n W^T + b, t_n), equal to optax's softmax cross-entropy of the full logits with the bias."""
    total = _chunked(h_NxD, w_VxD, t_N, chunk, b_V)[0]
    return total / h_NxD.shape[0]


def _fwd_b(h_NxD, w_VxD, b_V, t_N, chunk):
    total, G_h, G_W, G_b = _chunked(h_NxD, w_VxD, t_N, chunk, b_V)
    return total / h_NxD.shape[0], (G_h, G_W, G_b, h_NxD.shape[0])


def _bwd_b(chunk, residuals, g):
    G_h, G_W, G_b, n = residuals
    return G_h * (g / n), G_W * (g / n), G_b * (g / n), None


linear_cross_entropy_bias.defvjp(_fwd_b, _bwd_b)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def linear_succession_loss(h_NxD, w_VxD, b_V, t_N, prior_V, chunk: int = DEFAULT_CHUNK, eps: float = 0.0,
                           z_loss: float = 0.0):
    """succession_objective's loss of the tied head (with the output bias b_V, or None), chunked
    (jaxmodel/succession_objective.py is the eager form)."""
    total = _chunked(h_NxD, w_VxD, t_N, chunk, b_V, eps, prior_V, z_loss)[0]
    return total / h_NxD.shape[0]


def _succ_fwd(h_NxD, w_VxD, b_V, t_N, prior_V, chunk, eps, z_loss):
    total, G_h, G_W, G_b = _chunked(h_NxD, w_VxD, t_N, chunk, b_V, eps, prior_V, z_loss)
    return total / h_NxD.shape[0], (G_h, G_W, G_b, h_NxD.shape[0], prior_V)


def _succ_bwd(chunk, eps, z_loss, residuals, g):
    G_h, G_W, G_b, n, prior_V = residuals
    G_b = None if G_b is None else G_b * (g / n)
    return G_h * (g / n), G_W * (g / n), G_b, None, jnp.zeros_like(prior_V)  # the prior is a constant


linear_succession_loss.defvjp(_succ_fwd, _succ_bwd)


def fused_loss(params, cfg: GPTConfig, idx_BxT, targets_BxT, chunk: int = DEFAULT_CHUNK, smoothing_eps: float = 0.0,
               prior=None, z_loss: float = 0.0, token_counts=None, with_loads: bool = False, ngram_stats=None,
               held_out: bool = False):
    """The fast equal of jaxmodel.model.loss_fn, through the model's head (GPT.loss with `fused`): the tied
    head's loss chunked from its operands (the output bias lm_head/bias where good_turing_prior is on);
    adaptive_softmax's mean -log p(target) through the clusters, never the V-wide output. (loss, sown)
    with with_loads. smoothing_eps, prior, z_loss: succession_objective's loss instead (linear_succession_loss).
    A head_mixture (ngram_memory, its ngram_stats): its chunked -log p_mix(target) (jaxmodel/ngram_memory.py);
    held_out: the training loss (GPT.loss)."""
    if smoothing_eps and prior is None:
        raise ValueError("smoothing_eps > 0 needs the prior (a (V,) array of probabilities)")

    def fused(h_NxD, w_VxD, b_V, t_N):
        if smoothing_eps or z_loss:
            prior_V = jnp.zeros(w_VxD.shape[0], w_VxD.dtype) if prior is None else jnp.asarray(prior, w_VxD.dtype)
            return linear_succession_loss(h_NxD, w_VxD, b_V, t_N, prior_V, chunk, float(smoothing_eps), float(z_loss))
        if b_V is not None:
            return linear_cross_entropy_bias(h_NxD, w_VxD, b_V, t_N, chunk)
        return linear_cross_entropy(h_NxD, w_VxD, t_N, chunk)

    loss, loads = apply_with_loads(params, cfg, idx_BxT, token_counts, ngram_stats, targets_BxT=targets_BxT,
                                   fused=fused, chunk=chunk, held_out=held_out, method=GPT.loss)
    return (loss, loads) if with_loads else loss
