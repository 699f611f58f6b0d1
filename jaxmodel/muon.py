"""muon in Flax: the Muon update as an optax transformation and its Newton-Schulz iteration. Only the matrices
inside the blocks take it; jaxmodel/recipe.py builds the split from AdamW with optax.multi_transform.

The mathematics and source: the declaration, dreamteam/components/muon.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def newton_schulz(G_RxC, steps: int = 5, bf16: bool = False):
    """The approximate orthogonal factor U V^T of a matrix G (2-D), by `steps` quintic Newton-Schulz steps.

    The iteration runs in G's dtype, or in bfloat16 with bf16=True (the fast path); the result has G's dtype.
    """
    if G_RxC.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix; got shape {G_RxC.shape}")
    a, b, c = NS_COEFFS
    X = G_RxC.astype(jnp.bfloat16) if bf16 else G_RxC
    tall = G_RxC.shape[0] > G_RxC.shape[1]
    if tall:
        X = X.T
    X = X / (jnp.linalg.norm(X) + NS_EPS)  # every singular value now in [0, 1]
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.T
    return X.astype(G_RxC.dtype)


def shape_scale(shape) -> float:
    """sqrt(max(1, rows / cols)): a tall matrix's orthogonal factor has smaller entries; this evens them."""
    rows, cols = shape
    return max(1.0, rows / cols) ** 0.5


def orthogonalize(u_RxC, steps: int = 5, bf16: bool = False, split: int = 1):
    """NS5(u) * sqrt(max(1, rows / cols)); with split > 1, of each of `split` equal blocks of rows apart
    (the fused c_attn = [W_q; W_k; W_v] is three maps, orthogonalized one by one as in modded-nanogpt)."""
    blocks = jnp.split(u_RxC, split, axis=0)
    return jnp.concatenate([newton_schulz(b, steps, bf16) * shape_scale(b.shape) for b in blocks], axis=0)


class MuonState(NamedTuple):
    momentum: optax.Updates


def scale_by_muon(momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                  bf16: bool = False, split: int = 1) -> optax.GradientTransformation:
    """Gradients of 2-D matrices -> their Nesterov momentum, orthogonalized and shape-scaled (module docstring).

    The learning rate and the weight decay are applied after it (optax.add_decayed_weights, scale_by_learning_rate).
    """

    def init_fn(params):
        return MuonState(jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        for g in jax.tree.leaves(updates):
            if g.ndim != 2:
                raise ValueError(f"Muon acts on 2-D matrices only; got a tensor of shape {g.shape}")
        mom = jax.tree.map(lambda m, g: momentum * m + (1 - momentum) * g, state.momentum, updates)
        u = jax.tree.map(lambda m, g: (1 - momentum) * g + momentum * m, mom, updates) if nesterov else mom
        out = jax.tree.map(lambda u_: orthogonalize(u_, ns_steps, bf16, split), u)
        return out, MuonState(mom)

    return optax.GradientTransformation(init_fn, update_fn)
