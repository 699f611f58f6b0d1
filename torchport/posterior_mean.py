"""posterior_mean in torch: the EMA of the weights, with the decay schedule of
dreamteam/components/posterior_mean.py, which also states the mathematics and sources. The same role as
torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn, with the warmup of the decay that AveragedModel lacks.
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
