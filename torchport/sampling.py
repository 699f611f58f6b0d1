"""Samplers for generation in torch, driven by uniform numbers passed in (the twin of jaxmodel/sampling.py).

What each sampler computes: dreamteam/sampling.py. The filters work in float64, except on a device without it
(MPS: NO_FLOAT64), where they work in float32: the same sets and draws but where a threshold or a cumulative sum
falls within float32 rounding of u.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from dreamteam.sampling import SAMPLERS, check_p_min, check_tau, check_temperature, check_top_k

NO_FLOAT64 = frozenset({"mps"})  # device types without float64: sampling there computes in float32


def compute_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (parity with jaxmodel/sampling.py to rounding), else float32."""
    return torch.float32 if torch.device(device).type in NO_FLOAT64 else torch.float64


def _as_u(u):
    """The uniform numbers as a tensor: a tensor as it is, numbers or arrays as float64 on the host."""
    return u if isinstance(u, torch.Tensor) else torch.as_tensor(u, dtype=torch.float64)


def _probs(logits_BxV, temperature: float):
    check_temperature(temperature)
    return F.softmax(logits_BxV.to(compute_dtype(logits_BxV.device)) / temperature, dim=-1)


def _renormalize(p_BxV, keep_BxV):
    q_BxV = torch.where(keep_BxV, p_BxV, torch.zeros_like(p_BxV))
    return q_BxV / q_BxV.sum(-1, keepdim=True)


def top_k_probs(logits_BxV, k: int, temperature: float = 1.0):
    """softmax(z / T) restricted to the k largest entries (ties by lower id), renormalized."""
    p_BxV = _probs(logits_BxV, temperature)
    check_top_k(k)
    order_BxV = torch.sort(-p_BxV, dim=-1, stable=True).indices
    keep_BxV = torch.zeros_like(p_BxV, dtype=torch.bool).scatter_(-1, order_BxV[:, :k], True)
    return _renormalize(p_BxV, keep_BxV)


def min_p_probs(logits_BxV, p_min: float, temperature: float = 1.0):
    """Keep the ids with p >= p_min * max p, renormalize (min-p, Nguyen et al. 2024)."""
    check_p_min(p_min)
    p_BxV = _probs(logits_BxV, temperature)
    return _renormalize(p_BxV, p_BxV >= p_min * p_BxV.amax(-1, keepdim=True))


def typical_probs(logits_BxV, tau: float, temperature: float = 1.0):
    """Keep the shortest prefix of ids sorted by |surprisal - entropy| whose mass reaches tau (Meister et al. 2023)."""
    check_tau(tau)
    p_BxV = _probs(logits_BxV, temperature)
    logp_BxV = torch.log(p_BxV)
    plogp_BxV = torch.where(p_BxV > 0, p_BxV * logp_BxV, torch.zeros_like(p_BxV))
    H_Bx1 = -plogp_BxV.sum(-1, keepdim=True)
    dist_BxV = torch.abs(-logp_BxV - H_Bx1)  # p = 0: +inf, sorted last
    order_BxV = torch.sort(dist_BxV, dim=-1, stable=True).indices
    p_sorted = torch.gather(p_BxV, -1, order_BxV)
    before_BxV = torch.cumsum(p_sorted, dim=-1) - p_sorted  # mass of the ids ahead in the order
    keep_sorted = before_BxV < tau  # the prefix up to and including the id whose mass reaches tau
    keep_BxV = torch.zeros_like(keep_sorted).scatter_(-1, order_BxV, keep_sorted)
    return _renormalize(p_BxV, keep_BxV)


def draw(q_BxV, u_B):
    """Inverse-CDF draw: the smallest i with cumsum(q)_i > u * sum(q), one id per row."""
    c_BxV = torch.cumsum(q_BxV, dim=-1)
    # cast where u is (host numbers in float64 stay off a device without it), then move
    u_B = _as_u(u_B).to(dtype=c_BxV.dtype).to(device=c_BxV.device)
    idx_B = (c_BxV <= u_B[:, None] * c_BxV[:, -1:]).sum(-1)
    # u * total may round to total: never step past the last id with mass
    last_B = q_BxV.shape[-1] - 1 - torch.argmax((q_BxV > 0).flip(-1).to(torch.uint8), dim=-1)
    return torch.minimum(idx_B, last_B)


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


@torch.no_grad()
def generate(model, idx_BxT, u_NxB, sampler: str = "min_p", **options):
    """Append len(u_NxB) sampled tokens to idx_BxT, the model conditioned on the last block_size tokens;
    u_NxB[i] are the uniform numbers of the i-th new token of each row (any float dtype, any device: `draw`
    casts them to the sampling dtype)."""
    was_training = model.training
    model.eval()
    block = model.config.block_size
    for u_B in _as_u(u_NxB):
        logits_BxTxV, _ = model(idx_BxT[:, -block:])
        nxt_B = sample(logits_BxTxV[:, -1, :], u_B, sampler, **options)
        idx_BxT = torch.cat([idx_BxT, nxt_B[:, None].to(idx_BxT.dtype)], dim=1)
    model.train(was_training)
    return idx_BxT
