"""good_turing_prior: a trained output bias b, initialized to log p_GT, the Good-Turing estimate of the token
probabilities of train.bin (dreamteam/good_turing.py: Good 1953; Gale and Sampson 1995).

    logits = ln_f(x) W_tied^T + b,      b_0 = log p_GT       (sum_v exp b_0,v = 1)

While the tied weights contribute little (they start at std 0.02), softmax(logits) is close to p_GT: the model
starts from the best unigram model instead of the uniform one. The bias is lm_head.bias, trained afterwards
(no weight decay: it is a vector); the fused loss (torchport/fast.py) takes it as its `bias` argument.
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
