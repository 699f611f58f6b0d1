"""posterior_mean: an exponential moving average of the weights (Polyak & Juditsky 1992; Izmailov et al. 2018),
updated after every optimizer step and used for every evaluation and the saved checkpoint, while the raw
weights keep training:

    avg_t = d_t avg_{t-1} + (1 - d_t) theta_t,   d_t = min(decay, (1 + t) / (10 + t))   (dreamteam/posterior_mean.py)

Near a minimum, SGD's iterates scatter around it like draws from a posterior (Mandt et al. 2017, "SGD as
approximate Bayesian inference"); their average estimates the posterior mean, a point of lower loss than the
draws themselves. The same role as torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn, with the
warmup of the decay that AveragedModel lacks.
"""

from __future__ import annotations

import copy

import torch

from dreamteam.components.posterior_mean import decay_at


class PosteriorMean:
    """The averaged copy `module` of `model` (same class, same state_dict keys); `update()` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = float(decay)
        self.steps = 0
        self._avg = list(self.module.parameters())  # tied weights appear once in both lists, in the same order
        self._src = list(model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        """avg <- avg + (1 - d_t)(theta - avg), t = the number of updates so far."""
        weight = 1.0 - decay_at(self.steps, self.decay)
        torch._foreach_lerp_(self._avg, [p.detach() for p in self._src], weight)
        self.steps += 1
