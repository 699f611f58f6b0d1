"""muon in torch: `Muon`, one torch.optim.Optimizer for the whole model. Param groups with use_muon=True take
the Muon update, the others AdamW (torch.optim.AdamW's own update, fused where the device has the kernel), so
that one optimizer_step drives both. The Newton-Schulz iteration runs once per matrix shape, on the stack of a
group's matrices (and row blocks) of that shape. The Flax twin is jaxmodel/muon.py.

The mathematics and source: the declaration, dreamteam/components/muon.py.
"""

from __future__ import annotations


import torch
from torch.optim.adamw import adamw  # torch.optim.AdamW's update as a function

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def newton_schulz(G: torch.Tensor, steps: int = 5, bf16: bool = False) -> torch.Tensor:
    """The approximate orthogonal factor U V^T of a 2-D G, by `steps` quintic Newton-Schulz steps,
    in G's dtype (or bfloat16 with bf16=True); the result has G's dtype. A 3-D G (n, rows, cols) is n matrices of
    one shape, each orthogonalized alone in one batched iteration (bmm: the same kernels whatever n; on the CPU the same numbers as one by one)."""
    if G.dim() not in (2, 3):
        raise ValueError(f"newton_schulz needs a 2-D matrix or a stack of them; got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFS
    X = G.bfloat16() if bf16 else G
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True) + NS_EPS)  # every singular value now in [0, 1]
    for _ in range(steps):  # batched matmuls (bmm); baddbmm would save two kernels but round otherwise (1e-6)
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


def shape_scale(shape) -> float:
    """sqrt(max(1, rows / cols))."""
    rows, cols = shape
    return max(1.0, rows / cols) ** 0.5


def orthogonalize(u: torch.Tensor, steps: int = 5, bf16: bool = False, split: int = 1) -> torch.Tensor:
    """NS5(u) * sqrt(max(1, rows / cols)); with split > 1, of each of `split` equal blocks of rows apart
    (the fused c_attn = [W_q; W_k; W_v] is three maps, orthogonalized one by one as in modded-nanogpt)."""
    return orthogonalize_all([u], steps, bf16, split)[0]


def orthogonalize_all(us: list[torch.Tensor], steps: int = 5, bf16: bool = False, split: int = 1) -> list[torch.Tensor]:
    """[orthogonalize(u, steps, bf16, split) for u in us], with the row blocks of one shape stacked and run through
    one batched Newton-Schulz iteration: a handful of kernel launches per shape instead of per matrix."""
    blocks = [b for u in us for b in u.chunk(split, dim=0)]
    by_shape: dict[tuple, list[int]] = {}
    for i, b in enumerate(blocks):
        by_shape.setdefault((tuple(b.shape), b.dtype, b.device), []).append(i)
    out: list = [None] * len(blocks)
    for (shape, _, _), idx in by_shape.items():
        if len(idx) == 1:  # alone of its shape: the 2-D matmuls (a batch of one rounds otherwise on the CPU)
            out[idx[0]] = newton_schulz(blocks[idx[0]], steps, bf16) * shape_scale(shape)
            continue
        O = newton_schulz(torch.stack([blocks[i] for i in idx]), steps, bf16) * shape_scale(shape)
        for i, o in zip(idx, O.unbind(0)):
            out[i] = o
    return [torch.cat(out[k * split:(k + 1) * split], dim=0) if split > 1 else out[k] for k in range(len(us))]


class Muon(torch.optim.Optimizer):
    """Muon for the groups with use_muon=True (2-D matrices), AdamW for the others.

    Muon group keys: lr, momentum, nesterov, weight_decay, ns_steps, bf16, split (row blocks orthogonalized apart).
    AdamW group keys: lr, betas, eps, weight_decay.
    Any group may carry lr_ratio: torchport.recipe.optimizer_step sets its lr to the scheduled rate times it.
    """

    def __init__(self, param_groups, fused: bool | None = None):
        groups = [dict(g) for g in param_groups]
        for g in groups:
            g["params"] = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
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
        if fused is None:  # the AdamW part's kernel: fused where torch has it for every parameter's device
            devices = {p.device.type for g in groups if not g["use_muon"] for p in g["params"]}
            fused = bool(devices) and all(fused_supported(d) for d in devices)
        super().__init__(groups, dict(lr=1e-3, fused=bool(fused)))

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
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        grads = [p.grad for p in params]
        ms = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_mul_(ms, beta)
        torch._foreach_add_(ms, grads, alpha=1 - beta)  # m <- beta m + (1 - beta) g
        if group["nesterov"]:
            us = torch._foreach_mul(grads, 1 - beta)
            torch._foreach_add_(us, torch._foreach_mul(ms, beta))  # u = (1 - beta) g + beta m
        else:
            us = ms
        os_ = orthogonalize_all(us, group["ns_steps"], group["bf16"], group["split"])
        torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_add_(params, os_, alpha=-lr)

    def _adamw_group(self, group):
        """torch's AdamW update (torch.optim.adamw.adamw) on the group: its fused kernel with fused=True (Muon's
        default where the device has one), else the multi-tensor (foreach) form."""
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        fused = self.defaults["fused"]
        for p in params:
            state = self.state[p]
            if not state:
                # the step count as a tensor on the device for the fused kernel (no host read per step), on the
                # host for the foreach form (which reads it for the bias corrections)
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if fused else "cpu")
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        st = [self.state[p] for p in params]
        adamw(
            params, [p.grad for p in params], [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st], [],
            [s["step"] for s in st], foreach=not fused, fused=fused, amsgrad=False, beta1=b1, beta2=b2, lr=lr,
            weight_decay=wd, eps=eps, maximize=False)


def fused_supported(device_type: str) -> bool:
    """Whether the installed torch has the fused AdamW kernel for this device type (the CPU, CUDA and, in recent
    torch, MPS)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        return device_type in _get_fused_kernels_supported_devices()
    except ImportError:  # an older torch without the list: the kernels it had for certain
        return device_type in ("cpu", "cuda")


def is_muon_param(name: str, p: torch.Tensor) -> bool:
    """A 2-D matrix inside the blocks (transformer.h.*): Muon's; everything else AdamW's."""
    return name.startswith("transformer.h.") and p.dim() == 2


def is_fused_qkv(name: str) -> bool:
    """The fused query-key-value projection of the standard attention, [W_q; W_k; W_v]."""
    return name.endswith("attn.c_attn.weight")


def build(model: torch.nn.Module, recipe, lr_ratios: dict[str, float] | None = None, fused: bool | None = None) -> Muon:
    """The Muon optimizer of a Recipe for the model: block matrices on Muon, the rest on AdamW
    (weight decay on tensors of 2 or more dimensions, as the baseline's AdamW). lr_ratios: {name: r}, AdamW
    parameters in groups of their own at r times the scheduled rate (torchport.recipe.lr_ratios).
    fused: the AdamW part's kernel (None: fused where the parameters' device has it, else foreach)."""
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
         for name, p in model.named_parameters() if name in lr_ratios], fused=fused)
