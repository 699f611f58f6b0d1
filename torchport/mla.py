"""mla in torch: multi-head latent attention, and its absorbed form (`absorbed_attention`) that runs on the
cached latents as inference does.

The mathematics and source: the declaration, dreamteam/components/mla.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from dreamteam.config import GPTConfig
from torchport.model import CausalSelfAttention
from torchport.rope import apply_rope


class LatentQKV:
    """The qkv slot filled by mla, mixed into the attention (MultiHeadLatentAttention, below), so that
    its projections are the attention's own parameters (attn.kv_down, attn.k_up, ...), as in the checkpoints."""

    def add_projections(self, config: GPTConfig):
        H, K, R, Dr, D = config.n_head, config.head_dim, config.mla_kv_rank, config.mla_rotary_dim, config.n_embd
        self.kv_down = nn.Linear(D, R, bias=config.bias)
        self.k_up = nn.Linear(R, H * K, bias=config.bias)
        self.v_up = nn.Linear(R, H * K, bias=config.bias)
        if Dr:
            self.k_rope = nn.Linear(D, Dr, bias=config.bias)
        if config.mla_q_rank:
            self.q_down = nn.Linear(D, config.mla_q_rank, bias=config.bias)
            self.q_up = nn.Linear(config.mla_q_rank, H * (Dr + K), bias=config.bias)
        else:
            self.q_proj = nn.Linear(D, H * (Dr + K), bias=config.bias)

    def queries(self, x):
        """(q_R, q_C) per head: (B, H, T, d_r) and (B, H, T, K)."""
        B, T, _ = x.shape
        q = self.q_up(self.q_down(x)) if self.config.mla_q_rank else self.q_proj(x)
        q = q.view(B, T, self.config.n_head, -1).transpose(1, 2)
        return q[..., : self.config.mla_rotary_dim], q[..., self.config.mla_rotary_dim :]

    def latents(self, x):
        """What the cache holds per token: c (B, T, r) and the rotated shared key (B, T, d_r), d_r = 0 without rope."""
        Dr = self.config.mla_rotary_dim
        if not Dr:
            return self.kv_down(x), x.new_zeros(*x.shape[:2], 0)
        pos = torch.arange(x.shape[1], device=x.device)
        k_r = apply_rope(self.k_rope(x)[:, None], pos, Dr, self.config.rope_base)[:, 0]
        return self.kv_down(x), k_r

    def project(self, x):
        """Per-head queries and keys [rotary ; content] (B, H, T, d_r + K) and values (B, H, T, K), before the qk
        transforms (rms_qknorm over the whole head, rope on its first d_r coordinates)."""
        cfg = self.config
        B, T, _ = x.shape
        H, Dr = cfg.n_head, cfg.mla_rotary_dim
        c = self.kv_down(x)
        k = self.k_up(c).view(B, T, H, -1).transpose(1, 2)
        v = self.v_up(c).view(B, T, H, -1).transpose(1, 2)
        q_r, q = self.queries(x)
        if Dr:  # rotary part first: apply_rope turns the first Dr dims
            q = torch.cat([q_r, q], dim=-1)
            k = torch.cat([self.k_rope(x)[:, None].expand(B, H, T, Dr), k], dim=-1)
        return q, k, v

    def absorbed_attention(self, x):
        """The same output computed on the cached latents: W_UK folded into the queries, W_UV into c_proj.
        (Without rms_qknorm, whose key norm needs the decompressed key.)"""
        cfg = self.config
        B, T, D = x.shape
        H, K, R = cfg.n_head, cfg.head_dim, cfg.mla_kv_rank
        c, k_r = self.latents(x)
        q_r, q_c = self.queries(x)
        if cfg.mla_rotary_dim:
            q_r = apply_rope(q_r, torch.arange(T, device=x.device), cfg.mla_rotary_dim, cfg.rope_base)
        w_uk = self.k_up.weight.view(H, K, R)
        w_uv = self.v_up.weight.view(H, K, R)
        w_o = self.c_proj.weight.view(D, H, K)
        q_lat = torch.einsum("bhtk,hkr->bhtr", q_c, w_uk)  # W_UK^T q_C
        s = torch.einsum("bhtr,bsr->bhts", q_lat, c) + torch.einsum("bhte,bse->bhts", q_r, k_r)
        s = s / math.sqrt(K + cfg.mla_rotary_dim)
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
        o = torch.einsum("bhts,bsr->bhtr", s.softmax(-1), c)
        w_ouv = torch.einsum("dhk,hkr->dhr", w_o, w_uv)  # c_proj W_UV, per head
        return torch.einsum("bhtr,dhr->btd", o, w_ouv)


class MultiHeadLatentAttention(LatentQKV, CausalSelfAttention):
    """The attention with the qkv slot filled by mla: keys and values from one latent per token; queries and
    keys [rotary ; content] of width d_r + hd."""

    def __init__(self, config: GPTConfig):
        nn.Module.__init__(self)
        self.add_projections(config)
        # the qk transforms' gains before c_proj: the order of mla's parameters in the checkpoints
        self.fill_slots(config, config.mla_rotary_dim + config.head_dim, config.mla_rotary_dim)
        self.c_proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)


def cache_numbers_per_token(config: GPTConfig) -> int:
    """Numbers a decoder caches per token and layer: r + d_r with mla (d_r = 0 without rope), 2 * n_embd (k and v) without mla."""
    return config.mla_kv_rank + config.mla_rotary_dim if config.has("mla") else 2 * config.n_embd


# what mla fills in the torch GPT (torchport/model.py): the qkv slot, as the whole attention that projects this way
FILLS = {"qkv": MultiHeadLatentAttention}
