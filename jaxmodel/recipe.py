"""Training recipes in optax, the twins of torchport/recipe.py.

AdamW as torch.optim.AdamW computes it, decoupled weight decay on tensors of 2 or more dimensions:
    g <- g * min(1, c / (||g|| + 1e-6))                     (torch.nn.utils.clip_grad_norm_)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    p <- p - lr_t * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p )
The learning rate of step t is dreamteam.config.learning_rate(t, recipe), the same Python floats the
torch loop sets, looked up from a table so that the whole step stays jittable.

With the component `muon` on (build_optimizer's cfg), the 2-D matrices inside the blocks (paths under
transformer/h_*) take Muon (jaxmodel/muon.py) at learning rate muon_lr * learning_rate(t) / learning_rate,
with decoupled weight decay muon_weight_decay; everything else takes the AdamW above. Clipping stays global.
With good_turing_prior, its output bias lm_head/bias takes AdamW at good_turing_prior_lr_ratio times the
scheduled rate (torchport.recipe.lr_ratios: a parameter group of its own with that lr_ratio).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamteam.config import GPTConfig, Recipe, learning_rate
from jaxmodel.muon import scale_by_muon


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
    """Scale the gradients by min(1, max_norm / (global_norm + 1e-6)), exactly as torch's clip_grad_norm_.

    (optax.clip_by_global_norm omits the 1e-6, a relative difference of 1e-6 that float64 parity sees.)
    """

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def decay_mask(params):
    """Weight decay on tensors of 2 or more dimensions (matrices, embeddings), not on gains and biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def schedule(recipe: Recipe, num_steps: int, ratio: float = 1.0):
    """optax schedule: step count -> learning rate (times ratio), from the framework-neutral Python schedule."""
    table = np.array([learning_rate(i, recipe) * ratio for i in range(num_steps)], dtype=np.float64)
    table_j = jnp.asarray(table)

    def lr_fn(count):
        return table_j[jnp.minimum(count, num_steps - 1)]

    return lr_fn


def is_muon_path(path) -> bool:
    """A parameter path (tuple of names) inside the blocks, transformer/h_<i>/...: Muon's if it is 2-D."""
    return len(path) > 1 and path[0] == "transformer" and path[1].startswith("h_")


def path_names(path) -> tuple[str, ...]:
    """A tree_map_with_path key path as names, without the leading 'params' collection."""
    names = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
    return names[1:] if names and names[0] == "params" else names


def muon_labels(params):
    """'muon' for the 2-D matrices inside the blocks ('muon_qkv' for the fused c_attn, orthogonalized as three
    blocks W_q, W_k, W_v), 'adamw' for everything else."""

    def label(path, p):
        names = path_names(path)
        if p.ndim != 2 or not is_muon_path(names):
            return "adamw"
        return "muon_qkv" if names[-3:] == ("attn", "c_attn", "weight") else "muon"

    return jax.tree_util.tree_map_with_path(label, params)


def adamw(recipe: Recipe, num_steps: int, ratio: float = 1.0) -> optax.GradientTransformation:
    return optax.chain(
        optax.scale_by_adam(b1=recipe.beta1, b2=recipe.beta2, eps=recipe.eps),
        optax.add_decayed_weights(recipe.weight_decay, mask=decay_mask),
        optax.scale_by_learning_rate(schedule(recipe, num_steps, ratio)),
    )


def output_bias_labels(inner_labels):
    """Labels with good_turing_prior's output bias (lm_head/bias) relabelled 'output_bias'."""

    def labels(params):
        def relabel(path, label):
            return "output_bias" if path_names(path) == ("lm_head", "bias") else label

        return jax.tree_util.tree_map_with_path(relabel, inner_labels(params))

    return labels


def muon(recipe: Recipe, num_steps: int, split: int = 1) -> optax.GradientTransformation:
    return optax.chain(
        scale_by_muon(recipe.muon_momentum, recipe.muon_nesterov, recipe.muon_ns_steps, recipe.muon_bf16, split),
        optax.add_decayed_weights(recipe.muon_weight_decay),
        optax.scale_by_learning_rate(schedule(recipe, num_steps, recipe.muon_lr / recipe.learning_rate)),
    )


def build_optimizer(recipe: Recipe, num_steps: int, cfg: GPTConfig | None = None) -> optax.GradientTransformation:
    """The recipe's optimizer; cfg (the model config) says whether the component `muon` is on."""
    if recipe.optimizer != "adamw":
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
    parts = [clip_grad_norm(recipe.grad_clip)] if recipe.grad_clip > 0 else []
    transforms, labels = {"adamw": adamw(recipe, num_steps)}, None
    if cfg is not None and cfg.has("muon"):
        transforms.update(muon=muon(recipe, num_steps), muon_qkv=muon(recipe, num_steps, split=3))
        labels = muon_labels
    if cfg is not None and cfg.has("good_turing_prior") and recipe.good_turing_prior_lr_ratio != 1.0:
        transforms["output_bias"] = adamw(recipe, num_steps, recipe.good_turing_prior_lr_ratio)
        labels = output_bias_labels(labels or (lambda params: jax.tree.map(lambda p: "adamw", params)))
    parts.append(optax.multi_transform(transforms, labels) if labels else transforms["adamw"])
    return optax.chain(*parts)
