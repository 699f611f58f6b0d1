"""relu2_mlp: the MLP with the squared ReLU of Primer. Declaration only (no options, no framework-neutral numbers);
the modules are jaxmodel/relu2_mlp.py and torchport/relu2_mlp.py."""

from __future__ import annotations

from dreamteam.components import Component

COMPONENT = Component(
    "relu2_mlp", ("mlp",), "MLP with the squared ReLU activation (Primer)",
    math="""\
y = c_proj( relu(c_fc x)^2 ),   relu(z) = max(z, 0)
The baseline MLP with GELU replaced: hidden width 4D, the same parameters c_fc (D -> 4D) and c_proj (4D -> D)
and the same initialization (N(0, 0.02), c_proj at 0.02 / sqrt(2 n_layer)).
d/dz relu(z)^2 = 2 relu(z): continuous at 0, where ReLU's own derivative jumps from 0 to 1. A hidden unit whose
pre-activation is negative passes neither value nor gradient. Without biases y is homogeneous of degree 2:
y(a x) = a^2 y(x) for a >= 0.""",
    source='So et al. 2021, "Primer: Searching for efficient transformers for language modeling"',
    persona="leonardo_da_vinci",
)
