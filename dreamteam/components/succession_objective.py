"""succession_objective: its declaration, and the rule-of-succession prior of its targets, framework-neutral (numpy).

Laplace's rule of succession (Essai philosophique sur les probabilites, 1814): after a token has been seen
count_w times in N draws over V possible tokens, the posterior mean of its probability under a uniform
(Dirichlet(1, ..., 1)) prior is the add-one estimate

    pi_w = (count_w + 1) / (N + V),      sum_w pi_w = (N + V) / (N + V) = 1.

The counts are those of train.bin (dreamteam.data.token_counts), never of validation data.
"""

from __future__ import annotations

import numpy as np

from dreamteam.components import Component


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


def validate(cfg) -> list[str]:
    problems = []
    if not 0.0 <= cfg.succession_objective_eps < 1.0:
        problems.append(f"succession_objective_eps={cfg.succession_objective_eps} must lie in [0, 1)")
    if not cfg.succession_objective_zloss >= 0.0:
        problems.append(f"succession_objective_zloss={cfg.succession_objective_zloss} must be >= 0")
    return problems


COMPONENT = Component(
    "succession_objective", ("objective",),
    "training targets smoothed toward the add-one (rule-of-succession) prior, + z-loss",
    requires=(("head", (None,)),),
    options=("succession_objective_eps", "succession_objective_zloss"),  # weight eps of the prior, z-loss weight alpha
    validate=validate,
    math="""\
    q = (1 - eps) onehot(t) + eps pi,      pi_w = (count_w + 1) / (N + V)   (`prior`: add-one estimate of train.bin)
    loss = - sum_w q_w log p_w  +  alpha (log Z)^2
         = (1 - eps) CE + eps H(pi, p) + alpha lse^2  =  CE + eps (H(pi, p) - CE) + alpha lse^2
Label smoothing toward Laplace's rule of succession instead of the uniform distribution: the smoothing mass
goes to each token in proportion to its (add-one) frequency, a Dirichlet(1) posterior mean; the z-loss keeps
the normalizer Z = sum exp(z) near one. Only the training step uses it: validation and every reported loss
stay plain cross-entropy.""",
    source="Laplace 1814 (rule of succession); Szegedy et al. 2016 (label smoothing); Chowdhery et al. 2022 (PaLM's z-loss)",
    persona="pierre_simon_laplace",
)
