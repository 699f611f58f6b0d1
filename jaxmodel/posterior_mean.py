"""posterior_mean: an exponential moving average of the weights (Polyak & Juditsky 1992; Izmailov et al. 2018),
updated after every optimizer step and used for every evaluation and the saved checkpoint, while the raw
weights keep training:

    avg_t = d_t avg_{t-1} + (1 - d_t) theta_t,   d_t = min(decay, (1 + t) / (10 + t))   (dreamteam/posterior_mean.py)

Near a minimum, SGD's iterates scatter around it like draws from a posterior (Mandt et al. 2017, "SGD as
approximate Bayesian inference"); their average estimates the posterior mean, a point of lower loss than the
draws themselves. optax.incremental_update does the step.
"""

from __future__ import annotations

import optax


def update(avg, params, decay_t):
    """(1 - d_t) params + d_t avg, leaf by leaf (decay_t = dreamteam.posterior_mean.decay_at(t, decay))."""
    return optax.incremental_update(params, avg, 1.0 - decay_t)
