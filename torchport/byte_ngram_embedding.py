"""byte_ngram_embedding (torch): E = wte + mean of the hashed byte n-gram vectors of each id.

The mathematics and the tables are dreamteam/components/byte_ngram_embedding.py's. All V rows are composed
once per forward pass (the tied head needs every one): one `embedding_bag` over the M n-grams of the vocabulary
(M = 969845 for n in [3, 6]) in sum mode with the pooling weights as per_sample_weights, so no V x L padding
(an id has up to 506 n-grams) and no M x D temporary; its backward scatters dE into the K x D table.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.components.byte_ngram_embedding import table_of
from dreamteam.config import GPTConfig


class ByteNgramEmbedding(nn.Module):
    """The K x D bucket table G (`weight`); calling it on wte gives the composed E_VxD."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        t = table_of(config)
        self.weight = nn.Parameter(torch.zeros(config.byte_ngram_embedding_buckets, config.n_embd))
        if config.byte_ngram_embedding_init_std > 0:  # zeros draw nothing: the other weights stay the baseline's
            nn.init.normal_(self.weight, mean=0.0, std=config.byte_ngram_embedding_init_std)
        # the tables are fixed by the config, not state: non-persistent, so the state_dict holds `weight` alone
        self.register_buffer("bucket_M", torch.from_numpy(t.bucket_M), persistent=False)
        # each n-gram's id's n-gram count c: the pooling weight 1 / c is formed in the table's dtype at each use
        # (a float buffer cast float32 -> float64 would carry float32's rounding of 1/3 into a float64 model)
        self.register_buffer("count_M", torch.from_numpy(t.count_V[t.segment_M]), persistent=False)
        self.register_buffer("offsets_V", torch.from_numpy(t.offsets_V1[:-1].copy()), persistent=False)

    def pooled(self) -> torch.Tensor:
        """sum_l w[v, l] G[idx[v, l]] for every id v, (V, D); rows of ids without n-grams are 0."""
        return F.embedding_bag(self.bucket_M, self.weight, self.offsets_V, mode="sum",
                               per_sample_weights=1.0 / self.count_M.to(self.weight.dtype))

    def forward(self, wte_VxD: torch.Tensor) -> torch.Tensor:
        return wte_VxD + self.pooled()
