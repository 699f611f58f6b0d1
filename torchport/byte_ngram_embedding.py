"""byte_ngram_embedding (torch): E = wte + mean of the hashed byte n-gram vectors of each id.

The mathematics and the tables are dreamteam/components/byte_ngram_embedding.py's. All V rows are composed
once per forward pass (the tied head needs every one), over the M n-grams of the vocabulary (M = 969845 for
n in [3, 6]; no V x L padding, an id has up to 506 n-grams). Both directions are one `embedding_bag` in sum
mode, with the pooling weights as per_sample_weights:

    forward   pooled[v] = sum_{m in bag v} w_m G[bucket_m]      bags: the n-grams of each id
    backward  dG[k]     = sum_{m in bag k} w_m dE[id_m]         bags: the n-grams of each bucket

The bucket-side bags are the same n-grams sorted by bucket. Autograd's own backward of embedding_bag with
per_sample_weights, a scatter, made the baseline's train step 2.4x slower on one CPU thread; with the second
embedding_bag the step costs ~25% more than the baseline's (docs/personas/ada_lovelace.md, "Byte n-gram
embeddings").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.components.byte_ngram_embedding import table_of
from dreamteam.config import GPTConfig


class PooledNgrams(torch.autograd.Function):
    """pooled_VxD = A G for the V x K pooling matrix A given twice as bags: (bucket_M, offsets_V, w_M) by id and
    (id_M, offsets_K, w_M sorted alike) by bucket; the backward is A^T dE, the bucket-side bags."""

    @staticmethod
    def forward(ctx, G_KxD, bucket_M, offsets_V, w_M, id_by_bucket_M, offsets_K, w_by_bucket_M):
        ctx.save_for_backward(id_by_bucket_M, offsets_K, w_by_bucket_M)
        return F.embedding_bag(bucket_M, G_KxD, offsets_V, mode="sum", per_sample_weights=w_M)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_VxD):
        id_M, offsets_K, w_M = ctx.saved_tensors
        grad_G = F.embedding_bag(id_M, grad_VxD.contiguous(), offsets_K, mode="sum", per_sample_weights=w_M)
        return grad_G, None, None, None, None, None, None


class ByteNgramEmbedding(nn.Module):
    """The K x D bucket table G (`weight`); calling it on wte gives the composed E_VxD."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        t = table_of(config)
        K = config.byte_ngram_embedding_buckets
        self.weight = nn.Parameter(torch.zeros(K, config.n_embd))
        if config.byte_ngram_embedding_init_std > 0:  # zeros draw nothing: the other weights stay the baseline's
            nn.init.normal_(self.weight, mean=0.0, std=config.byte_ngram_embedding_init_std)
        # the tables are fixed by the config, not state: non-persistent, so the state_dict holds `weight` alone.
        # Each n-gram's id's n-gram count c is kept, and the weight 1 / c formed in the table's dtype at each use
        # (a float buffer cast float32 -> float64 would carry float32's rounding of 1/3 into a float64 model).
        order = np.argsort(t.bucket_M, kind="stable")
        count_M = t.count_V[t.segment_M]
        buffers = dict(bucket_M=t.bucket_M, offsets_V=t.offsets_V1[:-1], count_M=count_M,
                       id_by_bucket_M=t.segment_M[order], count_by_bucket_M=count_M[order],
                       offsets_K=np.concatenate([[0], np.cumsum(np.bincount(t.bucket_M, minlength=K))[:-1]]))
        for name, a in buffers.items():
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(a, np.int64)), persistent=False)

    def pooled(self) -> torch.Tensor:
        """sum_l w[v, l] G[idx[v, l]] for every id v, (V, D); rows of ids without n-grams are 0."""
        dtype = self.weight.dtype
        return PooledNgrams.apply(self.weight, self.bucket_M, self.offsets_V, 1.0 / self.count_M.to(dtype),
                                  self.id_by_bucket_M, self.offsets_K, 1.0 / self.count_by_bucket_M.to(dtype))

    def compose(self, wte_VxD: torch.Tensor) -> torch.Tensor:
        """E_VxD = wte + pooled."""
        return wte_VxD + self.pooled()

    def forward(self, idx, wte_VxD: torch.Tensor):
        """(E[idx], E): the ids' embeddings and the composed rows the tied head reads. A module call on the
        ids, as wte(idx) is without this component: the candidate harness counts such a call as the step's forward."""
        E_VxD = self.compose(wte_VxD)
        return F.embedding(idx, E_VxD), E_VxD


# what byte_ngram_embedding fills in the torch GPT (torchport/model.py): (its module's name under transformer,
# the module), a map wte -> the composed rows E
FILLS = {"token_embedding": ("byte_ngram", ByteNgramEmbedding)}
