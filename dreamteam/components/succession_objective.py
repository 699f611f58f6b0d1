"""The rule-of-succession prior of succession_objective, framework-neutral (numpy).

Laplace's rule of succession (Essai philosophique sur les probabilites, 1814): after a token has been seen
count_w times in N draws over V possible tokens, the posterior mean of its probability under a uniform
(Dirichlet(1, ..., 1)) prior is the add-one estimate

    pi_w = (count_w + 1) / (N + V),      sum_w pi_w = (N + V) / (N + V) = 1.

The counts are those of train.bin (dreamteam.data.token_counts), never of validation data.
"""

from __future__ import annotations

import numpy as np


def prior(token_counts) -> np.ndarray:
    """The add-one estimate pi_V = (count + 1) / (N + V) from the token counts of train.bin, float64."""
    if token_counts is None:
        raise ValueError("succession_objective needs the token counts of train.bin (dreamteam.data.token_counts); got None")
    c = np.asarray(token_counts)
    if c.ndim != 1 or c.size == 0 or not (np.issubdtype(c.dtype, np.integer) or np.all(c == np.round(c))):
        raise ValueError(f"token_counts must be a 1-D array of integer counts, one per vocabulary id; got shape {c.shape}, dtype {c.dtype}")
    if np.any(c < 0):
        raise ValueError("token_counts must be non-negative")
    c = c.astype(np.float64)
    return (c + 1.0) / (c.sum() + c.size)
