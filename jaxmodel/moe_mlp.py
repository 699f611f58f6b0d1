"""moe_mlp in Flax: the mixture-of-experts MLP and its router-bias update after each step (`update_router_bias`).

The experts are stored stacked, W_fc (E, F, D) and W_proj (E, D, F), the same names and shapes in torch. The bias b
lives in the non-parameter collection `buffers`; the loads of a forward are sown into the collection `moe_mlp`, what
its after-step hook reads (jaxmodel/model.py, apply_with_loads).
The mathematics and sources: the declaration, dreamteam/components/moe_mlp.py.
"""

from __future__ import annotations

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear, normal


def route(s_NxE, b_E, k: int):
    """(indices N x k of the top-k of s + b, ties by lower index; combination weights g N x k)."""
    _, idx_NxK = jax.lax.top_k(s_NxE + jax.lax.stop_gradient(b_E), k)  # lax.top_k: equal values, lower index first
    s_NxK = jnp.take_along_axis(s_NxE, idx_NxK, axis=-1)
    return idx_NxK, s_NxK / s_NxK.sum(-1, keepdims=True)


class MoEMLP(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        D, E, K, F = x_BxTxD.shape[-1], cfg.moe_mlp_experts, cfg.moe_mlp_top_k, cfg.moe_hidden
        proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        x_NxD = x_BxTxD.reshape(-1, D)
        r_NxE = Linear(E, False, name="router")(x_NxD)
        s_NxE = jax.nn.sigmoid(r_NxE) if cfg.moe_mlp_score == "sigmoid" else jax.nn.softmax(r_NxE, axis=-1)
        b_E = self.variable("buffers", "router_bias", lambda: jnp.zeros((E,), x_NxD.dtype)).value
        idx_NxK, g_NxK = route(s_NxE, b_E, K)
        sel_NxKxE = jax.nn.one_hot(idx_NxK, E, dtype=x_NxD.dtype)
        G_NxE = (sel_NxKxE * g_NxK[..., None]).sum(1)  # g at the selected experts, 0 elsewhere
        self.sow("moe_mlp", "load", jax.lax.stop_gradient(sel_NxKxE.sum((0, 1))))

        W_fc = self.param("experts_fc", normal(0.02), (E, F, D))
        W_proj = self.param("experts_proj", normal(proj_std), (E, D, F))
        h_NxExF = jnp.einsum("nd,efd->nef", x_NxD, W_fc)
        if cfg.bias:
            h_NxExF = h_NxExF + self.param("experts_fc_bias", nn.initializers.zeros, (E, F))
        y_NxExD = jnp.einsum("nef,edf->ned", jax.nn.gelu(h_NxExF, approximate=False), W_proj)
        if cfg.bias:
            y_NxExD = y_NxExD + self.param("experts_proj_bias", nn.initializers.zeros, (E, D))
        y_NxD = jnp.einsum("ne,ned->nd", G_NxE, y_NxExD)
        if cfg.moe_mlp_shared:
            h_NxF = jax.nn.gelu(Linear(F, cfg.bias, name="c_fc")(x_NxD), approximate=False)
            y_NxD = y_NxD + Linear(D, cfg.bias, std=proj_std, name="c_proj")(h_NxF)
        y_BxTxD = y_NxD.reshape(x_BxTxD.shape)
        return nn.Dropout(cfg.dropout)(y_BxTxD, deterministic=deterministic)


def update_router_bias(variables: dict, moe_load, rate: float) -> dict:
    """variables with every router_bias moved by rate * sign(mean load - load_e), from the loads a forward
    sowed (its `moe_mlp` collection; {} or None: unchanged). Outside the gradient: after the optimizer step."""
    if not moe_load:
        return variables
    flat_b = traverse_util.flatten_dict(dict(variables["buffers"]))
    for path, loads in traverse_util.flatten_dict(dict(moe_load)).items():
        load_E = loads[0] if isinstance(loads, tuple) else loads
        key = path[:-1] + ("router_bias",)
        b_E = flat_b[key]
        flat_b[key] = b_E + (rate * jnp.sign(load_E.mean() - load_E)).astype(b_E.dtype)
    return {**variables, "buffers": traverse_util.unflatten_dict(flat_b)}


# what moe_mlp fills in the Flax GPT (jaxmodel/model.py) and in its training step (jaxmodel/train.py): the after_step
# hook takes cfg and gives hook(variables, sown) -> variables
FILLS = {"mlp": MoEMLP, "after_step": lambda cfg: partial(update_router_bias, rate=cfg.moe_mlp_bias_rate)}
