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
from jaxmodel.rope import apply_rope


class LatentQKV(nn.Module):
    """The qkv slot's mla: q (B, H, T, d_r + K), k (B, H, T, d_r + K) and v (B, H, T, K) from the latents,
    the rotary part first (the model's qk transforms then normalize the whole head and rotate its first d_r
    coordinates). Its projections live in the attention module's scope: h_i/attn/kv_down, k_up, ..."""

    cfg: GPTConfig
    DROPOUT = "dropout"  # the name the attention's dropout had beside these projections (its masks' keys)

    @property
    def rotary_dim(self) -> int:
        return self.cfg.mla_rotary_dim

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

    def __call__(self, x_BxTxD):
        B, T, D = x_BxTxD.shape
        H, Dr = self.cfg.n_head, self.cfg.mla_rotary_dim
        c_BxTxR = self.kv_down(x_BxTxD)
        split = lambda a: a.reshape(B, T, H, -1).transpose(0, 2, 1, 3)  # noqa: E731
        k, v_BxHxTxK = split(self.k_up(c_BxTxR)), split(self.v_up(c_BxTxR))
        qr, q = self.queries(x_BxTxD)
        if Dr:  # rotary part first: apply_rope turns the first Dr dims
            q = jnp.concatenate([qr, q], axis=-1)
            k = jnp.concatenate([jnp.broadcast_to(self.k_rope(x_BxTxD)[:, None], (B, H, T, Dr)), k], axis=-1)
        return q, k, v_BxHxTxK


def absorbed_attention(variables, cfg: GPTConfig, x_BxTxD):
    """The output of the model's attention with mla (variables: that module's, h_i/attn), computed on the
    cached latents: W_UK folded into the queries, W_UV into c_proj. (Without rms_qknorm, whose key norm needs
    the decompressed key.)"""
    B, T, D = x_BxTxD.shape
    H, K, R = cfg.n_head, cfg.head_dim, cfg.mla_kv_rank
    qkv = LatentQKV(cfg)
    c_BxTxR, kr_BxTxDr = qkv.apply(variables, x_BxTxD, method=LatentQKV.latents)
    qr, qc = qkv.apply(variables, x_BxTxD, method=LatentQKV.queries)
    if cfg.mla_rotary_dim:
        qr = apply_rope(qr, jnp.arange(T), cfg.mla_rotary_dim, cfg.rope_base)
    p = variables["params"]
    w_uk_HxKxR = p["k_up"]["weight"].reshape(H, K, R)
    w_uv_HxKxR = p["v_up"]["weight"].reshape(H, K, R)
    w_o_DxHxK = p["c_proj"]["weight"].reshape(D, H, K)
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


# what mla fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"qkv": LatentQKV}
