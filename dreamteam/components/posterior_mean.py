"""The decay schedule of posterior_mean (the EMA of the weights), the same Python floats for both frameworks.

After optimizer step t (0-based) the average moves toward the new weights theta_t:

    avg_t = d_t avg_{t-1} + (1 - d_t) theta_t,   d_t = min(decay, (1 + t) / (10 + t)),   avg_{-1} = theta_init

The warmup (TensorFlow's ExponentialMovingAverage with num_updates) lets the average forget the random
initial weights fast: d_0 = 0.1, so the initialization keeps weight 0.1 * prod d_t, ~1e-6 after 100 steps,
whereas a plain 0.999 would still hold 0.37 of it after 1000 steps. d_t reaches the decay (0.999) at
t = 8990; until then the average spans about the last (10 + t) / 9 steps.
"""

from __future__ import annotations


def decay_at(step: int, decay: float) -> float:
    """d_t = min(decay, (1 + t) / (10 + t)) for optimizer step t = 0, 1, 2, ..."""
    if step < 0:
        raise ValueError(f"step={step}; expected >= 0")
    return min(float(decay), (1.0 + step) / (10.0 + step))
