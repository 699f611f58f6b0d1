"""Training recipes in optax, the twins of torchport/recipe.py.

AdamW as torch.optim.AdamW computes it, decoupled weight decay on tensors of 2 or more dimensions:
    g <- g * min(1, c / (||g|| + 1e-6))                     (torch.nn.utils.clip_grad_norm_)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    p <- p - lr_t * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p )
The learning rate of step t is dreamteam.config.learning_rate(t, recipe), the same Python floats the
torch loop sets, looked up from a table so that the whole step stays jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamteam.config import Recipe, learning_rate


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


def schedule(recipe: Recipe, num_steps: int):
    """optax schedule: step count -> learning rate, from the framework-neutral Python schedule."""
    table = np.array([learning_rate(i, recipe) for i in range(num_steps)], dtype=np.float64)
    table_j = jnp.asarray(table)

    def lr_fn(count):
        return table_j[jnp.minimum(count, num_steps - 1)]

    return lr_fn


def build_optimizer(recipe: Recipe, num_steps: int) -> optax.GradientTransformation:
    if recipe.optimizer != "adamw":
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
    parts = [clip_grad_norm(recipe.grad_clip)] if recipe.grad_clip > 0 else []
    parts += [
        optax.scale_by_adam(b1=recipe.beta1, b2=recipe.beta2, eps=recipe.eps),
        optax.add_decayed_weights(recipe.weight_decay, mask=decay_mask),
        optax.scale_by_learning_rate(schedule(recipe, num_steps)),
    ]
    return optax.chain(*parts)
