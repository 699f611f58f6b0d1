"""muon: MomentUm Orthogonalized by Newton-schulz (Jordan et al. 2024, "Muon: an optimizer for hidden layers").

For each 2-D weight matrix W (out, in) with gradient G:

    m <- beta m + (1 - beta) G                         momentum
    u <- (1 - beta) G + beta m                         Nesterov (else u = m)
    O <- NS5(u) * sqrt(max(1, rows / cols))           approximately U V^T of u = U S V^T
    W <- W (1 - lr wd) - lr O                          decoupled weight decay

NS5: five Newton-Schulz steps on X_0 = u / (||u||_F + 1e-7) (transposed if rows > cols):
    A = X X^T,   X <- a X + (b A + c A^2) X,   (a, b, c) = (3.4445, -4.7750, 2.0315)
each a map a s + b s^3 + c s^5 of the singular values alone, which sends any s in (0, 1] to roughly
[0.7, 1.2]: the update's condition number is near one, no direction of the matrix learns faster than another.

`Muon` is one torch.optim.Optimizer for the whole model: param groups with use_muon=True take the update above,
the others AdamW (the same arithmetic as torch.optim.AdamW), so that one optimizer_step drives both.
The Flax twin is jaxmodel/muon.py.
"""

from __future__ import annotations

import math

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def newton_schulz(G: torch.Tensor, steps: int = 5, bf16: bool = False) -> torch.Tensor:
    """The approximate orthogonal factor U V^T of a 2-D G, by `steps` quintic Newton-Schulz steps,
    in G's dtype (or bfloat16 with bf16=True); the result has G's dtype."""
    if G.dim() != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix; got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFS
    X = G.bfloat16() if bf16 else G
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / (torch.linalg.norm(X) + NS_EPS)  # every singular value now in [0, 1]
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.T
    return X.to(G.dtype)


def shape_scale(shape) -> float:
    """sqrt(max(1, rows / cols))."""
    rows, cols = shape
    return max(1.0, rows / cols) ** 0.5


def orthogonalize(u: torch.Tensor, steps: int = 5, bf16: bool = False, split: int = 1) -> torch.Tensor:
    """NS5(u) * sqrt(max(1, rows / cols)); with split > 1, of each of `split` equal blocks of rows apart
    (the fused c_attn = [W_q; W_k; W_v] is three maps, orthogonalized one by one as in modded-nanogpt)."""
    return torch.cat([newton_schulz(b, steps, bf16) * shape_scale(b.shape) for b in u.chunk(split, dim=0)], dim=0)


class Muon(torch.optim.Optimizer):
    """Muon for the groups with use_muon=True (2-D matrices), AdamW for the others.

    Muon group keys: lr, momentum, nesterov, weight_decay, ns_steps, bf16, split (row blocks orthogonalized apart).
    AdamW group keys: lr, betas, eps, weight_decay.
    Any group may carry lr_ratio: torchport.recipe.optimizer_step sets its lr to the scheduled rate times it.
    """

    def __init__(self, param_groups):
        groups = [dict(g) for g in param_groups]
        for g in groups:
            g.setdefault("use_muon", False)
            if g["use_muon"]:
                g.setdefault("momentum", 0.95)
                g.setdefault("nesterov", True)
                g.setdefault("ns_steps", 5)
                g.setdefault("bf16", False)
                g.setdefault("split", 1)
                for p in g["params"]:
                    if p.dim() != 2:
                        raise ValueError(f"Muon acts on 2-D matrices only; got a tensor of shape {tuple(p.shape)}")
            else:
                g.setdefault("betas", (0.9, 0.95))
                g.setdefault("eps", 1e-8)
            g.setdefault("weight_decay", 0.0)
        super().__init__(groups, dict(lr=1e-3))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (self._muon_group if group["use_muon"] else self._adamw_group)(group)
        return loss

    def _muon_group(self, group):
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            m = state["momentum_buffer"]
            m.mul_(beta).add_(g, alpha=1 - beta)
            u = g * (1 - beta) + m * beta if group["nesterov"] else m
            o = orthogonalize(u, group["ns_steps"], group["bf16"], group["split"])
            p.mul_(1 - lr * wd)
            p.add_(o, alpha=-lr)

    def _adamw_group(self, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.mul_(1 - lr * wd)
            denom = (v / (1 - b2**t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


def is_muon_param(name: str, p: torch.Tensor) -> bool:
    """A 2-D matrix inside the blocks (transformer.h.*): Muon's; everything else AdamW's."""
    return name.startswith("transformer.h.") and p.dim() == 2


def is_fused_qkv(name: str) -> bool:
    """The fused query-key-value projection of the standard attention, [W_q; W_k; W_v]."""
    return name.endswith("attn.c_attn.weight")


def build(model: torch.nn.Module, recipe, lr_ratios: dict[str, float] | None = None) -> Muon:
    """The Muon optimizer of a Recipe for the model: block matrices on Muon, the rest on AdamW
    (weight decay on tensors of 2 or more dimensions, as the baseline's AdamW). lr_ratios: {name: r}, AdamW
    parameters in groups of their own at r times the scheduled rate (torchport.recipe.lr_ratios)."""
    lr_ratios = lr_ratios or {}
    muon, qkv, decay, no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name in lr_ratios:
            continue
        if is_muon_param(name, p):
            (qkv if is_fused_qkv(name) else muon).append(p)
        else:
            (decay if p.dim() >= 2 else no_decay).append(p)
    adam = dict(lr=recipe.learning_rate, betas=(recipe.beta1, recipe.beta2), eps=recipe.eps)
    settings = dict(use_muon=True, lr=recipe.muon_lr, lr_ratio=recipe.muon_lr / recipe.learning_rate,
                    momentum=recipe.muon_momentum, nesterov=recipe.muon_nesterov,
                    weight_decay=recipe.muon_weight_decay, ns_steps=recipe.muon_ns_steps, bf16=recipe.muon_bf16)
    return Muon([
        dict(params=muon, split=1, **settings),
        dict(params=qkv, split=3, **settings),
        dict(params=decay, weight_decay=recipe.weight_decay, **adam),
        dict(params=no_decay, weight_decay=0.0, **adam),
    ] + [dict(params=[p], weight_decay=recipe.weight_decay if p.dim() >= 2 else 0.0, lr_ratio=lr_ratios[name], **adam)
         for name, p in model.named_parameters() if name in lr_ratios])
