"""fixed_point_qat in Flax: the fake quantization with the straight-through estimator. The stored parameters
stay float; the model reads the blocks' matrices through `fake_quant_block_params`.

The mathematics and sources: the declaration, dreamteam/components/fixed_point_qat.py.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def row_scale(w_OxI, bits: int):
    """scale_o = max_i |W_oi| / Q, (O, 1); 1 for an all-zero row (whose codes are 0 whatever the scale).
    Computed as max * (1/Q), one multiplication by the same constant in both frameworks (a division by a
    constant is rewritten that way by some compilers and not others: 1 ulp apart)."""
    amax_Ox1 = jnp.abs(w_OxI).max(-1, keepdims=True)
    return jnp.where(amax_Ox1 > 0, amax_Ox1 * (1.0 / qmax(bits)), jnp.ones_like(amax_Ox1))


def scaled(w_OxI, scale_Ox1):
    """W / scale computed as W * (1 / scale), the form XLA compiles the division into under jit (a true
    division, eager or in torch, differs by 1 ulp: enough to round a weight at a code boundary the other way)."""
    return w_OxI * (1.0 / scale_Ox1)


def quantize(w_OxI, bits: int, scale_Ox1=None):
    """(integer codes clamp(round(W / scale), -Q, Q) as floats, scale (O, 1))."""
    scale_Ox1 = row_scale(w_OxI, bits) if scale_Ox1 is None else scale_Ox1
    return jnp.clip(jnp.round(scaled(w_OxI, scale_Ox1)), -qmax(bits), qmax(bits)), scale_Ox1


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fake_quant(w_OxI, scale_Ox1, bits: int):
    codes, _ = quantize(w_OxI, bits, scale_Ox1)
    return codes * scale_Ox1


def _fake_quant_fwd(w_OxI, scale_Ox1, bits):
    inside = jnp.abs(jnp.round(scaled(w_OxI, scale_Ox1))) <= qmax(bits)  # the clamp leaves these codes alone
    return _fake_quant(w_OxI, scale_Ox1, bits), (inside, scale_Ox1)


def _fake_quant_bwd(bits, residuals, g_OxI):
    inside, scale_Ox1 = residuals
    return jnp.where(inside, g_OxI, jnp.zeros_like(g_OxI)), jnp.zeros_like(scale_Ox1)  # straight through


_fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def fake_quant(w_OxI, bits: int = 8, scale_Ox1=None):
    """q = clamp(round(W / scale), -Q, Q) * scale forward, the straight-through gradient backward.
    scale: per row max|W| / Q unless given (then gradients outside the clamp range are 0)."""
    scale_Ox1 = jax.lax.stop_gradient(row_scale(w_OxI, bits)) if scale_Ox1 is None else scale_Ox1
    return _fake_quant(w_OxI, scale_Ox1, bits)


def is_quantized(path: tuple[str, ...], leaf) -> bool:
    """The leaves fake-quantized inside a block: Linear weights (2-D arrays named `weight`)."""
    return path[-1] == "weight" and jnp.ndim(leaf) == 2


def fake_quant_block_params(tree, bits: int):
    """A block's variables with every Linear weight fake-quantized (used through nn.map_variables)."""

    def visit(node, path):
        if hasattr(node, "items"):
            return {k: visit(v, path + (k,)) for k, v in node.items()}
        return fake_quant(node, bits) if is_quantized(path, node) else node

    return visit(tree, ())


# what fixed_point_qat fills in the Flax GPT (jaxmodel/model.py): how the blocks read their parameters (the stored ones stay float)
FILLS = {"block_weights": lambda cfg: partial(fake_quant_block_params, bits=cfg.fixed_point_qat_bits)}
