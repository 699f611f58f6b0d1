"""rms_embedding (Flax): every row of wte through one RMSNorm, E_v = e_v / rms(e_v) * g.

The mathematics and sources: the declaration, dreamteam/components/rms_embedding.py; torchport/rms_embedding.py
is the twin.
"""

from __future__ import annotations

from dreamteam.config import GPTConfig
from jaxmodel.rms_qknorm import RMSNorm


def rms_embedding(cfg: GPTConfig, name=None):
    """The shared gain g (`weight`, D, starting at rms_embedding_gain); calling it on wte_VxD gives E_VxD."""
    return RMSNorm(cfg.rms_embedding_eps, cfg.rms_embedding_gain, name=name)


# what rms_embedding fills in the Flax GPT (jaxmodel/model.py): (the module's name in the trunk, the module), a map
# wte -> the normalized rows E
FILLS = {"token_embedding": ("wte_norm", rms_embedding)}
