"""Training recipes in torch: the optimizer a Recipe names, its learning rate per step, clipping.

The Flax twin is jaxmodel/recipe.py; parity checks that one step and a 20-step trajectory agree.
"""

from __future__ import annotations

import torch

from dreamteam.config import Recipe, learning_rate
from torchport import muon


def reference_fused(device_type: str) -> bool:
    """The eager reference's AdamW form, nanoGPT's: torch's fused kernel on CUDA only, the multi-tensor loop
    elsewhere (GPT.configure_optimizers' None picks the fused kernel on the CPU too)."""
    return device_type == "cuda"


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer runs torch's fused AdamW kernel (for Muon: its AdamW part)."""
    return bool(optimizer.defaults.get("fused"))


fused_supported = muon.fused_supported  # whether the installed torch has fused AdamW for a device type


def lr_ratios(config, recipe: Recipe) -> dict[str, float]:
    """Parameters (state_dict names) that learn at a fraction of the scheduled rate: good_turing_prior's output
    bias at recipe.good_turing_prior_lr_ratio. Empty where every parameter takes its group's rate."""
    if config is not None and config.has("good_turing_prior") and recipe.good_turing_prior_lr_ratio != 1.0:
        return {"lm_head.bias": recipe.good_turing_prior_lr_ratio}
    return {}


def build_optimizer(model: torch.nn.Module, recipe: Recipe, device_type: str = "cpu",
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer for the model; with the component `muon` on (model.config), torchport.muon's
    Muon for the matrices inside the blocks and AdamW for the rest, in one optimizer.
    fused: AdamW's single-kernel form (GPT.configure_optimizers, Muon's AdamW part; None: where the installed
    torch has it for device_type, MPS included in recent torch; reference_fused(device_type): the eager
    reference's choice)."""
    config = getattr(model, "config", None)
    if fused is None:
        fused = fused_supported(device_type)
    if recipe.optimizer == "adamw" and config is not None and config.has("muon"):
        return muon.build(model, recipe, lr_ratios(config, recipe), fused=fused)
    if recipe.optimizer == "adamw":
        return model.configure_optimizers(
            recipe.weight_decay, recipe.learning_rate, (recipe.beta1, recipe.beta2), device_type, eps=recipe.eps,
            fused=fused, lr_ratios=lr_ratios(config, recipe),
        )
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, it: int) -> None:
    """Set the scheduled learning rate for iteration `it` (times a group's lr_ratio, e.g. Muon's
    muon_lr / learning_rate), clip the gradients, step, and zero them."""
    lr = learning_rate(it, recipe)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_ratio", 1.0)
    if recipe.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
