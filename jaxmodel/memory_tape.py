"""memory_tape in Flax: attention over learned persistent key and value slots and the causal context, in one softmax.

The mathematics and source: the declaration, dreamteam/components/memory_tape.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamteam.config import GPTConfig


def tape_attention_weights(q_BxHxTxK, k_BxHxTxK, tape_k_HxMxK):
    """w_BxHxTx(M+T): one softmax per query over the M tape keys, then the causal context keys."""
    T, K = q_BxHxTxK.shape[-2:]
    s_tape_BxHxTxM = jnp.einsum("bhqe,hme->bhqm", q_BxHxTxK, tape_k_HxMxK)
    s_ctx_BxHxTxT = jnp.einsum("bhqe,bhse->bhqs", q_BxHxTxK, k_BxHxTxK)
    s_ctx_BxHxTxT = jnp.where(jnp.tril(jnp.ones((T, T), dtype=bool)), s_ctx_BxHxTxT, -jnp.inf)
    s = jnp.concatenate([s_tape_BxHxTxM, s_ctx_BxHxTxT], axis=-1) / math.sqrt(K)
    return jax.nn.softmax(s, axis=-1)


def tape_attention(w_BxHxTxS, v_BxHxTxK, tape_v_HxMxK):
    """y_BxHxTxK = w[..., :M] V^tape + w[..., M:] v."""
    M = tape_v_HxMxK.shape[1]
    return (jnp.einsum("bhqm,hmk->bhqk", w_BxHxTxS[..., :M], tape_v_HxMxK)
            + jnp.einsum("bhqs,bhsk->bhqk", w_BxHxTxS[..., M:], v_BxHxTxK))


class MemoryTape(nn.Module):
    """The extra_kv slot's memory_tape: (tape_k, tape_v), each (H, M, K), normal(0, 0.02). The parameters live
    in the attention module's scope (h_i/attn/tape_k, tape_v), drawn in that order."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self):
        cfg = self.cfg
        H, M, K = cfg.n_head, cfg.memory_tape_slots, cfg.head_dim
        init = nn.initializers.normal(stddev=0.02)
        return self.param("tape_k", init, (H, M, K)), self.param("tape_v", init, (H, M, K))


# what memory_tape fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"extra_kv": MemoryTape}
