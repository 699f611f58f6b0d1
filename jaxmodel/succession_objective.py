"""succession_objective in Flax: the training loss toward the rule-of-succession prior, + z-loss (the prior:
dreamteam/components/succession_objective.py, which also states the mathematics and sources).

`make_training_loss(cfg, token_counts, fast)` gives the function (params, x, y) -> loss that the training
step (jaxmodel/train.py) and parity differentiate: the plain loss when the component is off.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.special

from dreamteam.components import succession_objective as succession
from dreamteam.config import GPTConfig
from jaxmodel import model as gpt
from jaxmodel.fast import DEFAULT_CHUNK, fused_loss


def succession_cross_entropy(logits_NxV, targets_N, prior_V, eps: float, z_loss: float):
    """Mean over tokens of -sum_w q_w log softmax(z)_w + z_loss * logsumexp(z)^2."""
    lse_N = jax.scipy.special.logsumexp(logits_NxV, axis=-1)
    ce_N = lse_N - jnp.take_along_axis(logits_NxV, targets_N[:, None], axis=1)[:, 0]
    cross_prior_N = lse_N - logits_NxV @ prior_V.astype(logits_NxV.dtype)  # H(pi, p) = sum_w pi_w (lse - z_w)
    return ((1.0 - eps) * ce_N + eps * cross_prior_N + z_loss * lse_N * lse_N).mean()


def loss_fn(params, cfg: GPTConfig, idx_BxT, targets_BxT, prior_V):
    """succession_objective's training loss of the full logits (the eager reference)."""
    logits_BxTxV = gpt.GPT(cfg).apply(params, idx_BxT)
    return succession_cross_entropy(logits_BxTxV.reshape(-1, logits_BxTxV.shape[-1]), targets_BxT.reshape(-1),
                                    prior_V, cfg.succession_objective_eps, cfg.succession_objective_zloss)


def make_training_loss(cfg: GPTConfig, token_counts=None, fast: bool = False, chunk: int = DEFAULT_CHUNK,
                       with_loads: bool = False, ngram_stats=None):
    """(params, idx_BxT, targets_BxT) -> the loss the training step minimizes: plain cross-entropy
    (gpt.loss_fn, or the chunked fused_loss when fast) without succession_objective, its objective with it;
    with_loads: (loss, sown), what the after_step components sowed (moe_mlp's expert loads; {} where none is on).
    token_counts: those of train.bin (succession_objective's prior, adaptive_softmax's clusters)."""
    if not cfg.has("succession_objective"):  # held_out: the batches come from train.bin (ngram_memory)
        if fast:
            return lambda params, x, y: fused_loss(params, cfg, x, y, chunk, token_counts=token_counts,
                                                   with_loads=with_loads, ngram_stats=ngram_stats, held_out=True)
        return lambda params, x, y: gpt.loss_fn(params, cfg, x, y, token_counts, with_loads, ngram_stats, held_out=True)
    prior_V = jnp.asarray(succession.prior(token_counts))  # float64 under x64, else float32
    eps, alpha = cfg.succession_objective_eps, cfg.succession_objective_zloss
    if fast:
        loss = lambda params, x, y: fused_loss(params, cfg, x, y, chunk, smoothing_eps=eps, prior=prior_V, z_loss=alpha)
    else:
        loss = lambda params, x, y: loss_fn(params, cfg, x, y, prior_V)
    # moe_mlp is refused with succession_objective (config), so there are no loads to return
    return (lambda params, x, y: (loss(params, x, y), {})) if with_loads else loss
