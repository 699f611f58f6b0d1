"""tiled_attention in Flax: exact causal attention by key blocks with the online softmax.

The loop over key blocks is a `lax.scan` and the query blocks are a batch axis of it. T need not be a multiple
of the block: queries and keys are padded to one, the padded keys masked like future keys, the padded queries
dropped at the end (memory measured in benchmarks/tiled_attention_memory.py).
The mathematics and sources: the declaration, dreamteam/components/tiled_attention.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmodel.layers import Attend, causal_attention_weights


def tiled_attention(q_BxHxTxE, k_BxHxTxE, v_BxHxTxF, block: int = 16, bias=None):
    """Causal softmax(q k^T / sqrt(E) + bias) v, (B, H, T, F), computed by key blocks of `block` tokens.

    bias: the score_bias slot's bias(qpos, kpos) (laplace_bias's -s_h (i - j)) or None; it is asked for one
    block's query and key indices at a time, so it needs no T x T array either."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    B, H, T, E = q_BxHxTxE.shape
    n = -(-T // block)  # blocks, the last one padded
    pad = [(0, 0), (0, 0), (0, n * block - T), (0, 0)]
    q_BxHxNxSxE = jnp.pad(q_BxHxTxE, pad).reshape(B, H, n, block, E) / math.sqrt(E)
    k_NxBxHxSxE = jnp.pad(k_BxHxTxE, pad).reshape(B, H, n, block, E).transpose(2, 0, 1, 3, 4)
    v_NxBxHxSxF = jnp.pad(v_BxHxTxF, pad).reshape(B, H, n, block, -1).transpose(2, 0, 1, 3, 4)
    qpos_NxS = jnp.arange(n * block).reshape(n, block)

    def body(carry, xs):
        m_BxHxNxS, l_BxHxNxS, acc_BxHxNxSxF = carry
        k_BxHxSxE, v_BxHxSxF, kpos_S = xs
        s_BxHxNxSxS = jnp.einsum("bhnqe,bhke->bhnqk", q_BxHxNxSxE, k_BxHxSxE)
        if bias is not None:
            s_BxHxNxSxS = s_BxHxNxSxS + bias(qpos_NxS, kpos_S)[None]
        visible_NxSxS = kpos_S[None, None, :] <= qpos_NxS[:, :, None]  # causal; padded keys lie in every query's future
        s_BxHxNxSxS = jnp.where(visible_NxSxS, s_BxHxNxSxS, -jnp.inf)
        m_new = jnp.maximum(m_BxHxNxS, s_BxHxNxSxS.max(-1))
        # the first block holds key 0, visible to every query, so m_new is finite from the first step on
        p_BxHxNxSxS = jnp.exp(s_BxHxNxSxS - m_new[..., None])
        alpha = jnp.exp(m_BxHxNxS - m_new)
        l_new = alpha * l_BxHxNxS + p_BxHxNxSxS.sum(-1)
        acc_new = alpha[..., None] * acc_BxHxNxSxF + jnp.einsum("bhnqk,bhkf->bhnqf", p_BxHxNxSxS, v_BxHxSxF)
        return (m_new, l_new, acc_new), None

    F = v_BxHxTxF.shape[-1]
    dtype = q_BxHxTxE.dtype
    init = (
        jnp.full((B, H, n, block), -jnp.inf, dtype),
        jnp.zeros((B, H, n, block), dtype),
        jnp.zeros((B, H, n, block, F), dtype),
    )
    kpos_NxS = jnp.arange(n * block).reshape(n, block)
    (_, l, acc), _ = jax.lax.scan(body, init, (k_NxBxHxSxE, v_NxBxHxSxF, kpos_NxS))
    y_BxHxNxSxF = acc / l[..., None]
    return y_BxHxNxSxF.reshape(B, H, n * block, F)[:, :, :T]


def naive_attention(q_BxHxTxE, k_BxHxTxE, v_BxHxTxF):
    """The reference: the full T x T causal softmax, then the weighted sum of values."""
    return jnp.einsum("bhqs,bhsf->bhqf", causal_attention_weights(q_BxHxTxE, k_BxHxTxE), v_BxHxTxF)


class TiledAttention(Attend):
    """The attend slot's tiled_attention: the tiled online softmax above, by key blocks of `block` tokens.
    Extra keys and values (memory_tape) are attended untiled, by the default's one softmax over [tape | context].
    The attention weights are sown for anatomy as the default's are, computed (naively) only when the
    `intermediates` collection is asked for, so training never forms them."""

    block: int = 16

    def __call__(self, q_BxHxTxE, k_BxHxTxE, v_BxHxTxF, bias=None, extra_kv=None, pos_T=None):
        if extra_kv is not None:
            return super().__call__(q_BxHxTxE, k_BxHxTxE, v_BxHxTxF, bias, extra_kv, pos_T)
        if self.is_mutable_collection("intermediates"):
            bias_HxTxT = None if bias is None else bias(pos_T, pos_T)
            self.sow("intermediates", "attention_weights", causal_attention_weights(q_BxHxTxE, k_BxHxTxE, bias_HxTxT))
        return tiled_attention(q_BxHxTxE, k_BxHxTxE, v_BxHxTxF, self.block, bias)


# what tiled_attention fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"attend": lambda cfg: TiledAttention(cfg.tiled_attention_block)}
