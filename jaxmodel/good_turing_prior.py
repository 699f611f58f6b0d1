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
    """The output_bias slot's good_turing_prior: logits + b, b (V,) initialized to the Good-Turing
    log-probabilities of token_counts. Named `lm_head` in the model, so its parameter is `lm_head/bias` (torch:
    `lm_head.bias`).

    dtype: the dtype the parameters are cast to after init (init_params); log p_GT is rounded once into it,
    from float64 (not through float32, as the default init dtype would)."""

    vocab_size: int
    token_counts: Any = None
    dtype: Any = jnp.float32

    def setup(self):
        def init(key, shape):
            del key
            if self.token_counts is None:
                if not self.is_initializing():  # apply checks the shape of an existing bias this way
                    return jnp.zeros(shape, self.dtype)
                raise ConfigError("good_turing_prior needs token_counts (dreamteam.data.token_counts of train.bin)")
            if len(self.token_counts) != shape[0]:
                raise ConfigError(f"token_counts has {len(self.token_counts)} entries; the vocabulary has {shape[0]}")
            return jnp.asarray(good_turing.log_prior(self.token_counts), self.dtype)

        self.bias = self.param("bias", init, (self.vocab_size,))

    def __call__(self, logits_BxTxV):
        return logits_BxTxV + self.bias


# what good_turing_prior fills in the Flax GPT (jaxmodel/model.py): the tied head's bias, lm_head/bias
FILLS = {"output_bias": lambda cfg, counts, dtype: OutputBias(cfg.vocab_size, counts, dtype)}
