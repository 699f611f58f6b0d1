"""mla in Flax: multi-head latent attention, and its absorbed form (`absorbed_attention`) that runs on the
cached latents as inference does.

The mathematics and source: the declaration, dreamteam/components/mla.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear
from jaxmodel.rms_qknorm import RMSNorm
from jaxmodel.rope import apply_rope
from jaxmodel.tiled_attention import attend


class MultiHeadLatentAttention(nn.Module):
    cfg: GPTConfig

    def setup(self):
        cfg = self.cfg
        H, K, R, Dr = cfg.n_head, cfg.head_dim, cfg.mla_kv_rank, cfg.mla_rotary_dim
        self.kv_down = Linear(R, cfg.bias)
        self.k_up = Linear(H * K, cfg.bias)
        self.v_up = Linear(H * K, cfg.bias)
        if Dr:
            self.k_rope = Linear(Dr, cfg.bias)
        if cfg.mla_q_rank:
            self.q_down = Linear(cfg.mla_q_rank, cfg.bias)
            self.q_up = Linear(H * (Dr + K), cfg.bias)
        else:
            self.q_proj = Linear(H * (Dr + K), cfg.bias)
        if cfg.has("rms_qknorm"):
            self.q_norm = RMSNorm(cfg.rms_qknorm_eps, cfg.rms_qknorm_qk_gain)
            self.k_norm = RMSNorm(cfg.rms_qknorm_eps, cfg.rms_qknorm_qk_gain)
        self.c_proj = Linear(cfg.n_embd, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.dropout = nn.Dropout(cfg.dropout)

    def queries(self, x_BxTxD):
        """(q_R, q_C) per head: (B, H, T, d_r) and (B, H, T, K)."""
        cfg = self.cfg
        B, T, _ = x_BxTxD.shape
        q = self.q_up(self.q_down(x_BxTxD)) if cfg.mla_q_rank else self.q_proj(x_BxTxD)
        q_BxHxTxE = q.reshape(B, T, cfg.n_head, -1).transpose(0, 2, 1, 3)
        return q_BxHxTxE[..., : cfg.mla_rotary_dim], q_BxHxTxE[..., cfg.mla_rotary_dim :]

    def latents(self, x_BxTxD):
        """What the cache holds per token: c (B, T, r) and the rotated shared key (B, T, d_r), d_r = 0 without rope."""
        B, T, _ = x_BxTxD.shape
        Dr = self.cfg.mla_rotary_dim
        if not Dr:
            return self.kv_down(x_BxTxD), jnp.zeros((B, T, 0), x_BxTxD.dtype)
        kr_Bx1xTxR = apply_rope(self.k_rope(x_BxTxD)[:, None], jnp.arange(T), Dr, self.cfg.rope_base)
        return self.kv_down(x_BxTxD), kr_Bx1xTxR[:, 0]

    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        B, T, D = x_BxTxD.shape
        H, Dr = cfg.n_head, cfg.mla_rotary_dim
        c_BxTxR = self.kv_down(x_BxTxD)
        split = lambda a: a.reshape(B, T, H, -1).transpose(0, 2, 1, 3)
        k, v_BxHxTxK = split(self.k_up(c_BxTxR)), split(self.v_up(c_BxTxR))
        qr, q = self.queries(x_BxTxD)
        if Dr:  # rotary part first: apply_rope turns the first Dr dims
            q = jnp.concatenate([qr, q], axis=-1)
            k = jnp.concatenate([jnp.broadcast_to(self.k_rope(x_BxTxD)[:, None], (B, H, T, Dr)), k], axis=-1)
        if cfg.has("rms_qknorm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if Dr:
            pos_T = jnp.arange(T)
            q, k = apply_rope(q, pos_T, Dr, cfg.rope_base), apply_rope(k, pos_T, Dr, cfg.rope_base)
        y_BxHxTxK = attend(self, cfg, q, k, v_BxHxTxK)  # tiled or naive; sows the weights for anatomy
        y_BxTxD = self.c_proj(y_BxHxTxK.transpose(0, 2, 1, 3).reshape(B, T, -1))
        return self.dropout(y_BxTxD, deterministic=deterministic)

    def absorbed_attention(self, x_BxTxD):
        """The same output computed on the cached latents: W_UK folded into the queries, W_UV into c_proj.
        (Without rms_qknorm, whose key norm needs the decompressed key.)"""
        cfg = self.cfg
        B, T, D = x_BxTxD.shape
        H, K, R = cfg.n_head, cfg.head_dim, cfg.mla_kv_rank
        c_BxTxR, kr_BxTxDr = self.latents(x_BxTxD)
        qr, qc = self.queries(x_BxTxD)
        if cfg.mla_rotary_dim:
            qr = apply_rope(qr, jnp.arange(T), cfg.mla_rotary_dim, cfg.rope_base)
        w_uk_HxKxR = self.k_up.variables["params"]["weight"].reshape(H, K, R)
        w_uv_HxKxR = self.v_up.variables["params"]["weight"].reshape(H, K, R)
        w_o_DxHxK = self.c_proj.variables["params"]["weight"].reshape(D, H, K)
        q_lat_BxHxTxR = jnp.einsum("bhtk,hkr->bhtr", qc, w_uk_HxKxR)  # W_UK^T q_C
        s = jnp.einsum("bhtr,bsr->bhts", q_lat_BxHxTxR, c_BxTxR) + jnp.einsum("bhte,bse->bhts", qr, kr_BxTxDr)
        s = s / math.sqrt(K + cfg.mla_rotary_dim)
        s = jnp.where(jnp.tril(jnp.ones((T, T), dtype=bool)), s, -jnp.inf)
        o_BxHxTxR = jnp.einsum("bhts,bsr->bhtr", jax.nn.softmax(s, axis=-1), c_BxTxR)
        w_ouv_DxHxR = jnp.einsum("dhk,hkr->dhr", w_o_DxHxK, w_uv_HxKxR)  # c_proj W_UV, per head
        return jnp.einsum("bhtr,dhr->btd", o_BxHxTxR, w_ouv_DxHxR)


def cache_numbers_per_token(cfg: GPTConfig) -> int:
    """Numbers a decoder caches per token and layer: r + d_r with mla (d_r = 0 without rope), 2 * n_embd (k and v) without mla."""
    return cfg.mla_kv_rank + cfg.mla_rotary_dim if cfg.has("mla") else 2 * cfg.n_embd
