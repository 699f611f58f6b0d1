"""The whole training step as one CUDA graph: forward, backward, gradient clipping, the optimizer step and the
after-step weight average, captured once (torch.cuda.CUDAGraph) and replayed every iteration after.

A step of this model is launch-bound on a GPU (about 730 kernels for the baseline, a few microseconds of work
each): one graph replay launches them all at once. A graph freezes everything the host decides at capture:
tensor addresses and every Python number passed to a kernel. So the step reads only static tensors:

    x, y             static batch buffers, copied into before each replay
    lr (per group)   a 0-d tensor in each AdamW param group, filled with the scheduled rate before each replay
                     (torch's fused AdamW reads a tensor lr on the device; capturable=True keeps its step count
                     there too)
    ema weight       posterior_mean's 1 - d_t as a 0-d tensor, the average updated by lerp_ with it

and the iteration number never enters the captured code. Components whose step keeps Python-side state
across iterations cannot be captured (CAPTURE_UNSAFE; GraphUnavailableError names them).

Without capture (capture=False, any device) the same static-buffer step runs eagerly: what the CPU tests
compare with train_mps.py's eager step. On CUDA the first `warmup` calls run eagerly on a side stream (torch's
recipe: allocator and library state settle before capture), the next one captures and replays.
"""

from __future__ import annotations

import warnings

import torch

from dreamteam.config import learning_rate
from dreamteam.components.posterior_mean import decay_at

# component -> why its training step cannot be captured as it is written today
CAPTURE_UNSAFE = {
    "muon": "torchport.muon.Muon passes its learning rate and its AdamW step count to the kernels as Python "
            "numbers, which a graph would freeze at capture",
    "moe_mlp": "MoEMLP sums its expert loads by reassigning a Python attribute (load_sum) each forward, which a "
               "graph would freeze at capture",
}
WARMUP_STEPS = 3  # eager steps on a side stream before capture (torch.cuda.graphs' whole-network recipe)


class GraphUnavailableError(ValueError):
    """The graph step asked for where it cannot run: no CUDA device, a capture-unsafe component, an optimizer
    other than torch's fused AdamW."""


def check_graphable(config, device: str, optimizer: torch.optim.Optimizer | None = None, capture: bool = True) -> None:
    """Raise GraphUnavailableError, in one line, unless the graph step can run this model here."""
    kind = str(device).split(":")[0]
    if capture and kind != "cuda":
        raise GraphUnavailableError(f"the CUDA graph step needs a CUDA device; this run's device is {device!r}")
    unsafe = [c for c in getattr(config, "components", ()) if c in CAPTURE_UNSAFE]
    if unsafe:
        raise GraphUnavailableError("the CUDA graph step cannot capture "
                                    + "; ".join(f"{c}: {CAPTURE_UNSAFE[c]}" for c in unsafe))
    fused = optimizer is None or (isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults.get("fused"))
    if not fused:
        raise GraphUnavailableError("the CUDA graph step needs torch's fused AdamW (a tensor learning rate on the "
                                    f"device); got {type(optimizer).__name__} fused={optimizer.defaults.get('fused')}")


class GraphStep:
    """`step(x, y, it)`: one training iteration of `model` on the batch (x, y) at iteration `it`, returning the
    training loss (a tensor the next call overwrites when captured).

    loss_fn(model, x, y) -> the scalar training loss (train_mps.py's training_loss); recipe: the Recipe whose
    schedule (dreamteam.config.learning_rate) and clipping the step applies; averaged: a
    torchport.posterior_mean.PosteriorMean of `model`, or None. The optimizer's param groups get a tensor lr
    (and capturable=True when capturing) in place: build it for this GraphStep alone.
    """

    def __init__(self, model, optimizer, recipe, loss_fn, batch_shape, device, averaged=None, capture: bool = True,
                 warmup: int = WARMUP_STEPS):
        device = torch.device(device)
        self.capture = bool(capture)
        check_graphable(getattr(model, "config", None), str(device), optimizer, self.capture)
        self.model, self.optimizer, self.recipe, self.loss_fn = model, optimizer, recipe, loss_fn
        self.averaged, self.warmup = averaged, int(warmup)
        self.x = torch.zeros(batch_shape, dtype=torch.long, device=device)
        self.y = torch.zeros(batch_shape, dtype=torch.long, device=device)
        # fused AdamW reads a CPU lr tensor as a double (the Python float's value) and a device one as float32
        lr_dtype = torch.float64 if device.type == "cpu" else torch.float32
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=lr_dtype, device=device)
            group["capturable"] = self.capture
        if averaged is not None:
            params = list(model.parameters())
            self._avg_pairs = list(zip(averaged.module.parameters(), params))
            self.ema_weight = torch.zeros((), dtype=params[0].dtype, device=device)
        self.graph = None
        self.loss = None
        self.calls = 0

    def _body(self):
        """The step on the static tensors: nothing in it depends on the iteration but through them."""
        loss = self.loss_fn(self.model, self.x, self.y)
        loss.backward()
        if self.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        self.model.after_step()  # the components' updates (none of the capture-safe ones has any today)
        if self.averaged is not None:
            with torch.no_grad():
                for avg, p in self._avg_pairs:  # avg <- lerp(avg, theta, 1 - d_t), posterior_mean's update
                    avg.lerp_(p, self.ema_weight)
        return loss.detach()

    def set_inputs(self, x, y, it: int) -> None:
        """Copy the batch into the static buffers and the iteration's numbers into their tensors."""
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        lr = learning_rate(it, self.recipe)
        for group in self.optimizer.param_groups:
            group["lr"].fill_(lr * group.get("lr_ratio", 1.0))
        if self.averaged is not None:
            self.ema_weight.fill_(1.0 - decay_at(self.averaged.steps, self.averaged.decay))

    def __call__(self, x, y, it: int) -> torch.Tensor:
        self.set_inputs(x, y, it)
        if not self.capture:
            self.loss = self._body()
            self.optimizer.zero_grad(set_to_none=True)
        elif self.calls < self.warmup:
            self.loss = self._warmup_step()
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
        if self.averaged is not None:
            self.averaged.steps += 1
        self.calls += 1
        return self.loss

    def _warmup_step(self):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")  # uncaptured on purpose
            loss = self._body()
            self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.current_stream().wait_stream(stream)
        return loss

    def _capture(self):
        # gradients None before capture: backward allocates them from the graph's pool and every replay writes
        # them afresh (no accumulation, no zeroing inside the graph)
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self._body()
        # capture records without running: the replay that follows is this iteration's step
