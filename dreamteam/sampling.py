"""The samplers for generation, framework-neutral: what each computes, stated once for jaxmodel/sampling.py and
torchport/sampling.py, which implement it.

Every sampler maps the next-token logits z_BxV (any normalization: log-probabilities are fine) to a
distribution q_BxV, and `draw(q, u)` picks the id by the inverse CDF: the smallest i with
sum_{j <= i} q_j > u * sum_j q_j, for u uniform in [0, 1). Both frameworks take the same u, so the ids they
sample are the same; the filters work in float64 (where the framework and device have it) so that the two
agree to rounding.

    temperature:  p = softmax(z / temperature)
    top_k:        keep the k largest p (ties: lower id first), renormalize
    min_p (Nguyen et al. 2024, "Turning up the heat: min-p sampling for creative and coherent LLM outputs"):
                  keep {v : p_v >= p_min * max_w p_w}, renormalize
    typical (Meister et al. 2023, "Locally typical sampling"): with surprisal -log p_v and entropy
                  H = -sum_v p_v log p_v, sort the ids by |-log p_v - H| (ties: lower id first) and keep the
                  shortest prefix whose mass reaches tau, renormalize
"""

from __future__ import annotations

SAMPLERS = ("temperature", "top_k", "min_p", "typical")


# The samplers' settings, checked alike on both sides (one ValueError line each).
def check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}; expected > 0")


def check_top_k(k: int) -> None:
    if not 1 <= k:
        raise ValueError(f"top_k={k}; expected >= 1")


def check_p_min(p_min: float) -> None:
    if not 0.0 <= p_min <= 1.0:
        raise ValueError(f"p_min={p_min}; expected a number in [0, 1]")


def check_tau(tau: float) -> None:
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau={tau}; expected a number in (0, 1]")
