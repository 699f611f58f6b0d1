"""byte_ngram_embedding (Flax): E = wte + mean of the hashed byte n-gram vectors of each id.

The mathematics and the tables are dreamteam/components/byte_ngram_embedding.py's; torchport/byte_ngram_embedding.py
is the twin. Composition over the M n-grams of the vocabulary, no V x L padding: gather G[bucket_M], weight by
1 / c (c the id's n-gram count, formed in the table's dtype), and sum per id with a sorted segment sum.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamteam.components.byte_ngram_embedding import table_of
from dreamteam.config import GPTConfig
from jaxmodel.layers import normal


def compose(wte_VxD, G_KxD, cfg: GPTConfig):
    """E_VxD = wte + sum_l w[v, l] G[idx[v, l]], w = 1 / (the id's n-gram count)."""
    t = table_of(cfg)
    w_M = 1.0 / jnp.asarray(t.count_V[t.segment_M], G_KxD.dtype)
    pooled_VxD = jax.ops.segment_sum(G_KxD[jnp.asarray(t.bucket_M)] * w_M[:, None], jnp.asarray(t.segment_M),
                                     num_segments=t.vocab_size, indices_are_sorted=True)
    return wte_VxD + pooled_VxD


class ByteNgramEmbedding(nn.Module):
    """The K x D bucket table G (`weight`; zeros at init_std 0); calling it on wte gives the composed E_VxD."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, wte_VxD):
        cfg = self.cfg
        std = cfg.byte_ngram_embedding_init_std
        init = normal(std) if std > 0 else nn.initializers.zeros
        G_KxD = self.param("weight", init, (cfg.byte_ngram_embedding_buckets, cfg.n_embd))
        return compose(wte_VxD, G_KxD, cfg)


# what byte_ngram_embedding fills in the Flax GPT (jaxmodel/model.py): (the module's name in the trunk, the module), a map wte -> the
# composed rows E
FILLS = {"token_embedding": ("byte_ngram", ByteNgramEmbedding)}
