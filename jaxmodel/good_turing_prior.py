"""good_turing_prior in Flax: the tied head's trained output bias, initialized to log p_GT from the token
counts of train.bin (the estimate: dreamteam/components/good_turing_prior.py, which also states the mathematics).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dreamteam.components import good_turing_prior as good_turing
from dreamteam.config import ConfigError


class OutputBias(nn.Module):
    """logits + b, b of shape (V,) initialized to the Good-Turing log-probabilities of token_counts.
    Named `lm_head` in the model, so its parameter is `lm_head/bias` (torch: `lm_head.bias`)."""

    token_counts: Any = None

    @nn.compact
    def __call__(self, logits_BxTxV):
        V = logits_BxTxV.shape[-1]

        def init(key, shape, dtype=jnp.float32):
            del key
            if self.token_counts is None:
                if not self.is_initializing():  # apply checks the shape of an existing bias this way
                    return jnp.zeros(shape, dtype)
                raise ConfigError("good_turing_prior needs token_counts (dreamteam.data.token_counts of train.bin)")
            if len(self.token_counts) != shape[0]:
                raise ConfigError(f"token_counts has {len(self.token_counts)} entries; the vocabulary has {shape[0]}")
            return jnp.asarray(good_turing.log_prior(self.token_counts), dtype)

        return logits_BxTxV + self.param("bias", init, (V,))
