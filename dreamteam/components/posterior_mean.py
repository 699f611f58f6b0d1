"""posterior_mean: its declaration, and the decay schedule of the EMA of the weights, the same Python floats for
both frameworks.

After optimizer step t (0-based) the average moves toward the new weights theta_t:

    avg_t = d_t avg_{t-1} + (1 - d_t) theta_t,   d_t = min(decay, (1 + t) / (10 + t)),   avg_{-1} = theta_init

The warmup (TensorFlow's ExponentialMovingAverage with num_updates) lets the average forget the random
initial weights fast: d_0 = 0.1, so the initialization keeps weight 0.1 * prod d_t, ~1e-6 after 100 steps,
whereas a plain 0.999 would still hold 0.37 of it after 1000 steps. d_t reaches the decay (0.999) at
t = 8990; until then the average spans about the last (10 + t) / 9 steps.
"""

from __future__ import annotations

from dreamteam.components import Component


def decay_at(step: int, decay: float) -> float:
    """d_t = min(decay, (1 + t) / (10 + t)) for optimizer step t = 0, 1, 2, ..."""
    if step < 0:
        raise ValueError(f"step={step}; expected >= 0")
    return min(float(decay), (1.0 + step) / (10.0 + step))


def validate(cfg) -> list[str]:
    if not 0.0 <= cfg.posterior_mean_decay < 1.0:
        return [f"posterior_mean_decay={cfg.posterior_mean_decay} must lie in [0, 1)"]
    return []


COMPONENT = Component(
    "posterior_mean", ("weight_averaging",),
    "EMA (Polyak) average of the weights, used for evaluation and the checkpoint",
    options=("posterior_mean_decay",),  # the EMA decay of the averaged weights (with the warmup of `decay_at`)
    validate=validate,
    math="""\
After optimizer step t (0-based) the average moves toward the new weights theta_t:
    avg_t = d_t avg_{t-1} + (1 - d_t) theta_t,   d_t = min(decay, (1 + t) / (10 + t)),   avg_{-1} = theta_init
The average is used for every evaluation and the saved checkpoint, while the raw weights keep training. Near
a minimum, SGD's iterates scatter around it like draws from a posterior; their average estimates the
posterior mean, a point of lower loss than the draws themselves. The warmup lets the average forget the random
initial weights fast (d_0 = 0.1).""",
    source="Polyak and Juditsky 1992; Izmailov et al. 2018; Mandt et al. 2017, \"SGD as approximate Bayesian inference\"",
    persona="pierre_simon_laplace",
)
