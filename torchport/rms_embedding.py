"""rms_embedding (torch): every row of wte through one RMSNorm, E_v = e_v / rms(e_v) * g.

The mathematics and sources: the declaration, dreamteam/components/rms_embedding.py.
"""

from __future__ import annotations

from torch.nn import functional as F

from dreamteam.config import GPTConfig
from torchport.rms_qknorm import RMSNorm


class RMSEmbedding(RMSNorm):
    """The shared gain g (`weight`, D, starting at rms_embedding_gain); calling it on wte gives E_VxD."""

    def __init__(self, config: GPTConfig):
        super().__init__(config.n_embd, config.rms_embedding_eps, config.rms_embedding_gain)

    def compose(self, wte_VxD):
        """E_VxD: each row RMS-normalized, times g."""
        return super().forward(wte_VxD)

    def forward(self, idx, wte_VxD):
        """(E[idx], E): the ids' embeddings and the rows the tied head reads (a module call on the ids, as wte(idx)
        is without this component: the candidate harness counts it as the step's forward)."""
        E_VxD = self.compose(wte_VxD)
        return F.embedding(idx, E_VxD), E_VxD


# what rms_embedding fills in the torch GPT (torchport/model.py): (its module's name under transformer, the module),
# a map wte -> the normalized rows E
FILLS = {"token_embedding": ("wte_norm", RMSEmbedding)}
