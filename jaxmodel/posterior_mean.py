"""posterior_mean in Flax: the EMA of the weights (optax.incremental_update), with the decay schedule of
dreamteam/components/posterior_mean.py, which also states the mathematics and sources.
"""

from __future__ import annotations

import optax


def update(avg, params, decay_t):
    """(1 - d_t) params + d_t avg, leaf by leaf (decay_t = dreamteam.components.posterior_mean.decay_at(t, decay))."""
    return optax.incremental_update(params, avg, 1.0 - decay_t)
