"""succession_objective in torch: the training loss toward the rule-of-succession prior, + z-loss (the prior:
dreamteam/components/succession_objective.py, which also states the mathematics and sources).

`training_loss(model, idx, targets, fast)` is what train_mps.py (and parity) call for the training step: the
plain loss when the component is off, otherwise this objective, fused and chunked (torchport/fast.py, same
numbers) or eager (`succession_cross_entropy` of the full logits, the reference).
"""

from __future__ import annotations

import torch

from dreamteam.components import succession_objective as succession
from torchport.fast import DEFAULT_CHUNK, IGNORE_INDEX, fused_loss


def succession_cross_entropy(logits_NxV, targets_N, prior_V, eps: float, z_loss: float):
    """Mean over the tokens with target != -1 of -sum_w q_w log softmax(z)_w + z_loss * logsumexp(z)^2."""
    lse_N = torch.logsumexp(logits_NxV, -1)
    keep_N = targets_N != IGNORE_INDEX
    t_N = torch.where(keep_N, targets_N, torch.zeros_like(targets_N))
    ce_N = lse_N - logits_NxV.gather(1, t_N[:, None])[:, 0]
    cross_prior_N = lse_N - logits_NxV @ prior_V.to(logits_NxV.dtype)  # H(pi, p) = sum_w pi_w (lse - z_w)
    loss_N = (1.0 - eps) * ce_N + eps * cross_prior_N + z_loss * lse_N * lse_N
    w_N = keep_N.to(logits_NxV.dtype)
    return (loss_N * w_N).sum() / w_N.sum()


def prior_of(model) -> torch.Tensor:
    """pi_V from model.token_counts (train.bin), in the head's dtype and on its device, made once per
    (dtype, device) and kept on the model: no host-to-device copy per step, float64 parity from float64 pi."""
    if getattr(model, "token_counts", None) is None:
        raise ValueError("succession_objective needs the train.bin token counts: build GPT(config, token_counts=...)")
    W = model.lm_head.weight
    cache = model.__dict__.setdefault("_succession_prior", {})
    key = (W.dtype, W.device)
    if key not in cache:
        cache[key] = torch.tensor(succession.prior(model.token_counts), dtype=W.dtype, device=W.device)
    return cache[key]


def training_loss(model, idx_BxT, targets_BxT, fast: bool = True, chunk: int = DEFAULT_CHUNK):
    """The loss the training step minimizes for torchport.model.GPT: plain cross-entropy (fused_loss when
    fast, else model(idx, targets)), or with succession_objective on, the smoothed loss with z-loss."""
    cfg = model.config
    if not cfg.has("succession_objective"):
        return fused_loss(model, idx_BxT, targets_BxT, chunk) if fast else model(idx_BxT, targets_BxT)[1]
    prior_V = prior_of(model)
    eps, alpha = cfg.succession_objective_eps, cfg.succession_objective_zloss
    if fast:
        return fused_loss(model, idx_BxT, targets_BxT, chunk, smoothing_eps=eps, prior=prior_V, z_loss=alpha)
    logits_BxTxV, _ = model(idx_BxT, targets_BxT)
    return succession_cross_entropy(logits_BxTxV.reshape(-1, logits_BxTxV.size(-1)), targets_BxT.reshape(-1),
                                    prior_V, eps, alpha)

