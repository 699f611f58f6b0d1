"""moe_mlp in torch: the mixture-of-experts MLP and its router-bias update after each step (`update_router_bias`).

The experts are stored stacked, experts_fc (E, F, D) and experts_proj (E, D, F), as in jaxmodel/moe_mlp.py; the
forward computes every expert for every token and needs no host sync. b is the buffer `router_bias`; each
training forward keeps its loads (`last_load`) and adds them to `load_sum`.
The mathematics and sources: the declaration, dreamteam/components/moe_mlp.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.config import GPTConfig


def route(s_NxE, b_E, k: int):
    """(indices N x k of the top-k of s + b, ties by lower index; combination weights g N x k)."""
    idx_NxK = torch.sort(s_NxE.detach() + b_E, dim=-1, descending=True, stable=True).indices[:, :k]
    s_NxK = torch.gather(s_NxE, -1, idx_NxK)
    return idx_NxK, s_NxK / s_NxK.sum(-1, keepdim=True)


class MoEMLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        D, E, Fh = config.n_embd, config.moe_mlp_experts, config.moe_hidden
        self.config = config
        self.router = nn.Linear(D, E, bias=False)
        proj_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.experts_fc = nn.Parameter(torch.randn(E, Fh, D) * 0.02)
        self.experts_proj = nn.Parameter(torch.randn(E, D, Fh) * proj_std)
        if config.bias:
            self.experts_fc_bias = nn.Parameter(torch.zeros(E, Fh))
            self.experts_proj_bias = nn.Parameter(torch.zeros(E, D))
        if config.moe_mlp_shared:
            self.c_fc = nn.Linear(D, Fh, bias=config.bias)
            self.c_proj = nn.Linear(Fh, D, bias=config.bias)
        self.register_buffer("router_bias", torch.zeros(E))
        self.dropout = nn.Dropout(config.dropout)
        self.last_load = None  # loads of the last training forward, for the bias update
        self.load_sum = None  # loads summed since reset_load_sum(), for the run record

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the shared expert's residual projection at 0.02 / sqrt(2 n_layer)
        (the routed experts' experts_proj is drawn at that scale when built)."""
        if self.config.moe_mlp_shared:
            nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def forward(self, x_BxTxD):
        cfg = self.config
        D, E, K = x_BxTxD.shape[-1], cfg.moe_mlp_experts, cfg.moe_mlp_top_k
        x_NxD = x_BxTxD.reshape(-1, D)
        r_NxE = self.router(x_NxD)
        s_NxE = torch.sigmoid(r_NxE) if cfg.moe_mlp_score == "sigmoid" else F.softmax(r_NxE, dim=-1)
        idx_NxK, g_NxK = route(s_NxE, self.router_bias, K)
        # one-hot by comparison: F.one_hot checks its indices' range on the host (a sync per call on CUDA/MPS)
        sel_NxKxE = (idx_NxK[..., None] == torch.arange(E, device=idx_NxK.device)).to(x_NxD.dtype)
        G_NxE = (sel_NxKxE * g_NxK[..., None]).sum(1)  # g at the selected experts, 0 elsewhere
        if self.training:
            load_E = sel_NxKxE.detach().sum((0, 1))
            self.last_load = load_E
            self.load_sum = load_E if self.load_sum is None else self.load_sum + load_E
        h_NxExF = torch.einsum("nd,efd->nef", x_NxD, self.experts_fc)
        if cfg.bias:
            h_NxExF = h_NxExF + self.experts_fc_bias
        y_NxExD = torch.einsum("nef,edf->ned", F.gelu(h_NxExF), self.experts_proj)
        if cfg.bias:
            y_NxExD = y_NxExD + self.experts_proj_bias
        y_NxD = torch.einsum("ne,ned->nd", G_NxE, y_NxExD)
        if cfg.moe_mlp_shared:
            y_NxD = y_NxD + self.c_proj(F.gelu(self.c_fc(x_NxD)))
        return self.dropout(y_NxD.reshape(x_BxTxD.shape))

    @torch.no_grad()
    def update_router_bias(self):
        """b_e <- b_e + u * sign(mean load - load_e) from the last training forward's loads (once)."""
        if self.last_load is not None:
            load_E = self.last_load.to(self.router_bias.dtype)
            self.router_bias.add_(self.config.moe_mlp_bias_rate * torch.sign(load_E.mean() - load_E))
            self.last_load = None


def moe_layers(model: nn.Module) -> list[tuple[str, MoEMLP]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MoEMLP)]


def update_router_bias(model: nn.Module) -> None:
    """The balancing bias update of every moe_mlp layer; call it after each optimizer step."""
    for _, m in moe_layers(model):
        m.update_router_bias()


def take_load_sums(model: nn.Module) -> dict:
    """{layer name: [load of each expert summed since the last call]} (as lists), and reset the sums."""
    out = {}
    for name, m in moe_layers(model):
        if m.load_sum is not None:
            out[name] = [float(v) for v in m.load_sum.tolist()]
        m.load_sum = None
    return out


# what moe_mlp fills in the torch GPT (torchport/model.py) and in its training step (GPT.after_step): hook(model)
FILLS = {"mlp": MoEMLP, "after_step": update_router_bias}
