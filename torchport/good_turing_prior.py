"""good_turing_prior in torch: lm_head.bias initialized to log p_GT from the token counts of train.bin (the
estimate: dreamteam/components/good_turing_prior.py, which also states the mathematics); the fused loss
(torchport/fast.py) takes the bias as its `bias` argument.
"""

from __future__ import annotations

import numpy as np
import torch

from dreamteam.components import good_turing_prior as good_turing
from dreamteam.config import ConfigError


@torch.no_grad()
def init_output_bias(lm_head: torch.nn.Linear, token_counts) -> None:
    """Set lm_head.bias to the Good-Turing log-probabilities of token_counts."""
    if token_counts is None:
        raise ConfigError("good_turing_prior needs token_counts (dreamteam.data.token_counts of train.bin)")
    counts = np.asarray(token_counts)
    if counts.shape != (lm_head.out_features,):
        raise ConfigError(f"token_counts has shape {counts.shape}; the vocabulary has {lm_head.out_features}")
    lm_head.bias.copy_(torch.from_numpy(good_turing.log_prior(counts)))


# what good_turing_prior fills in the torch GPT (torchport/model.py): the init of the tied head's bias
FILLS = {"output_bias": init_output_bias}
