"""golden_swiglu: the MLP as SwiGLU of golden-ratio width. Declaration only (no options, no framework-neutral
numbers; its width is GPTConfig.swiglu_hidden); the modules are jaxmodel/golden_swiglu.py and torchport/golden_swiglu.py."""

from __future__ import annotations

from dreamteam.components import Component

COMPONENT = Component(
    "golden_swiglu", ("mlp",), "SwiGLU MLP of golden-ratio width",
    math="""\
y = c_proj( silu(c_gate x) * (c_fc x) ),   silu(z) = z * sigmoid(z)
hidden width F = round(phi^2 * D), phi = (1 + sqrt 5) / 2: the three matrices hold 3 * 2.618 D^2 = 7.85 D^2
parameters, the proportion of the 8 D^2 of the 4x GELU MLP.""",
    source='Shazeer 2020, "GLU variants improve Transformer"',
    persona="leonardo_da_vinci",
)
