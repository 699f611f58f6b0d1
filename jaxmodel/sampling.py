"""Samplers for generation in JAX, driven by uniform numbers passed in (the twin of torchport/sampling.py).

What each sampler computes: dreamteam/sampling.py. The filters work in float64 where x64 is enabled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamteam.sampling import SAMPLERS, check_p_min, check_tau, check_temperature, check_top_k


def _probs(logits_BxV, temperature: float):
    check_temperature(temperature)
    z = jnp.asarray(logits_BxV, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    return jax.nn.softmax(z / temperature, axis=-1)


def _renormalize(p_BxV, keep_BxV):
    q_BxV = jnp.where(keep_BxV, p_BxV, 0.0)
    return q_BxV / q_BxV.sum(-1, keepdims=True)


def top_k_probs(logits_BxV, k: int, temperature: float = 1.0):
    """softmax(z / T) restricted to the k largest entries (ties by lower id), renormalized."""
    p_BxV = _probs(logits_BxV, temperature)
    check_top_k(k)
    order_BxV = jnp.argsort(-p_BxV, axis=-1, stable=True)
    rank_BxV = jnp.argsort(order_BxV, axis=-1, stable=True)  # rank of each id in the sorted order
    return _renormalize(p_BxV, rank_BxV < k)


def min_p_probs(logits_BxV, p_min: float, temperature: float = 1.0):
    """Keep the ids with p >= p_min * max p, renormalize (min-p, Nguyen et al. 2024)."""
    check_p_min(p_min)
    p_BxV = _probs(logits_BxV, temperature)
    return _renormalize(p_BxV, p_BxV >= p_min * p_BxV.max(-1, keepdims=True))


def typical_probs(logits_BxV, tau: float, temperature: float = 1.0):
    """Keep the shortest prefix of ids sorted by |surprisal - entropy| whose mass reaches tau (Meister et al. 2023)."""
    check_tau(tau)
    p_BxV = _probs(logits_BxV, temperature)
    logp_BxV = jnp.log(p_BxV)
    plogp_BxV = jnp.where(p_BxV > 0, p_BxV * logp_BxV, 0.0)
    H_Bx1 = -plogp_BxV.sum(-1, keepdims=True)
    dist_BxV = jnp.abs(-logp_BxV - H_Bx1)  # p = 0: +inf, sorted last
    order_BxV = jnp.argsort(dist_BxV, axis=-1, stable=True)
    p_sorted = jnp.take_along_axis(p_BxV, order_BxV, axis=-1)
    before_BxV = jnp.cumsum(p_sorted, axis=-1) - p_sorted  # mass of the ids ahead in the order
    keep_sorted = before_BxV < tau  # the prefix up to and including the id whose mass reaches tau
    keep_BxV = jnp.zeros_like(keep_sorted).at[jnp.arange(p_BxV.shape[0])[:, None], order_BxV].set(keep_sorted)
    return _renormalize(p_BxV, keep_BxV)


def draw(q_BxV, u_B):
    """Inverse-CDF draw: the smallest i with cumsum(q)_i > u * sum(q), one id per row."""
    c_BxV = jnp.cumsum(q_BxV, axis=-1)
    target_Bx1 = jnp.asarray(u_B, c_BxV.dtype)[:, None] * c_BxV[:, -1:]
    idx_B = (c_BxV <= target_Bx1).sum(-1)
    # u * total may round to total: never step past the last id with mass
    last_B = q_BxV.shape[-1] - 1 - jnp.argmax((q_BxV > 0)[:, ::-1], axis=-1)
    return jnp.minimum(idx_B, last_B)


def sampler_probs(logits_BxV, sampler: str = "min_p", temperature: float = 1.0, p_min: float = 0.1,
                  tau: float = 0.9, top_k: int = 40):
    if sampler == "min_p":
        return min_p_probs(logits_BxV, p_min, temperature)
    if sampler == "typical":
        return typical_probs(logits_BxV, tau, temperature)
    if sampler == "top_k":
        return top_k_probs(logits_BxV, top_k, temperature)
    if sampler == "temperature":
        return _probs(logits_BxV, temperature)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {list(SAMPLERS)}")


def sample(logits_BxV, u_B, sampler: str = "min_p", **options):
    """One id per row of logits_BxV, drawn with the uniform numbers u_B (see the module docstring)."""
    return draw(sampler_probs(logits_BxV, sampler, **options), u_B)


def generate(params, cfg, idx_BxT, u_NxB, sampler: str = "min_p", token_counts=None, ngram_stats=None, **options):
    """Append len(u_NxB) sampled tokens to idx_BxT, the model conditioned on the last block_size tokens;
    u_NxB[i] are the uniform numbers of the i-th new token of each row. token_counts and ngram_stats are
    what the model was built with (good_turing_prior's counts, ngram_memory's bigram statistics)."""
    from jaxmodel.model import GPT

    model = GPT(cfg, token_counts, ngram_stats=ngram_stats)
    idx_BxT = jnp.asarray(idx_BxT)
    for u_B in jnp.asarray(u_NxB):
        logits_BxTxV = model.apply(params, idx_BxT[:, -cfg.block_size:])
        nxt_B = sample(logits_BxTxV[:, -1, :], u_B, sampler, **options)
        idx_BxT = jnp.concatenate([idx_BxT, nxt_B[:, None].astype(idx_BxT.dtype)], axis=1)
    return idx_BxT
