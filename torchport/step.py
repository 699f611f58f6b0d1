"""One training step of the torch port, written once: what parity, the device checks and their tests run.

    loss = training_loss(model, x, y, fast)                 # the objective slot: cross-entropy or succession's
    loss.backward()
    after_backward(it, model, loss)                         # optional: parity reads the gradients here
    recipes.optimizer_step(model, optimizer, recipe, it)    # scheduled lr, clipping, step, zero_grad
    after_update(it, model)                                 # optional: parity reads the optimizer's weights here
    model.after_step()                                      # the components' updates outside the gradient (moe_mlp)
    averaged.update()                                       # posterior_mean's average of the updated weights

train_mps.py keeps the same lines written out in its loop (its `eager_step`): `dreamteam check` reads the
optimizer step and the backward pass of a candidate's train_mps.py from its source; tests/test_train_mps.py
checks that the two give the same weights bit for bit. torchport/graph_step.py captures the same step as one
CUDA graph.
"""

from __future__ import annotations

import torch

from torchport import recipe as recipes
from torchport.posterior_mean import PosteriorMean
from torchport.succession_objective import training_loss


def posterior_mean_of(model: torch.nn.Module) -> PosteriorMean | None:
    """posterior_mean's averaged copy of the model where the component is on (model.config), else None."""
    cfg = model.config
    return PosteriorMean(model, cfg.posterior_mean_decay) if cfg.has("posterior_mean") else None


class TrainStep:
    """`step(x, y, it)`: one training iteration of `model` on the batch (x, y) at iteration `it`; returns the
    detached training loss.

    fast: the fused chunked loss of torchport/fast.py (same numbers, no B x T x V logits); else the eager
    reference. averaged: posterior_mean's PosteriorMean of the model (posterior_mean_of), or None.
    after_backward(it, model, loss) and after_update(it, model) are called, where given, after the backward
    pass and after the optimizer step (before the after-step updates of the components).
    """

    def __init__(self, model, optimizer, recipe, fast: bool = True, averaged: PosteriorMean | None = None,
                 after_backward=None, after_update=None):
        self.model, self.optimizer, self.recipe, self.fast = model, optimizer, recipe, fast
        self.averaged = averaged
        self.after_backward, self.after_update = after_backward, after_update

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights every evaluation and the checkpoint use: the average where posterior_mean is on."""
        return self.averaged.module if self.averaged is not None else self.model

    def __call__(self, x, y, it: int) -> torch.Tensor:
        loss = training_loss(self.model, x, y, fast=self.fast)
        loss.backward()
        if self.after_backward is not None:
            self.after_backward(it, self.model, loss)
        recipes.optimizer_step(self.model, self.optimizer, self.recipe, it)
        if self.after_update is not None:
            self.after_update(it, self.model)
        self.model.after_step()  # the components' updates outside the gradient (moe_mlp's balancing bias)
        if self.averaged is not None:
            self.averaged.update()
        return loss.detach()
