"""rope: rotary position embedding. Declaration only (no framework-neutral numbers); the modules are
jaxmodel/rope.py and torchport/rope.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    # an odd rotated width is refused with rope off too (as before the declarations)
    if cfg.rotary_dim % 2 or (cfg.has("rope") and cfg.rotary_dim == 0):
        return [f"rope_fraction={cfg.rope_fraction} gives {cfg.rotary_dim} rotated dims of {cfg.head_dim}; "
                "expected an even number > 0"]
    return []


COMPONENT = Component(
    "rope", ("qk_transform",), "rotary positions (Su et al. 2021)", positions=True,
    # rope_base: the angles' base; rope_fraction: the share of each head's dims that is rotated
    options=("rope_base", "rope_fraction"),
    validate=validate,
    math="""\
Each pair of coordinates (2i, 2i+1), i < d_rot / 2, of a query or key at position p is rotated by
theta_i(p) = p * rope_base^(-2i / d_rot),  d_rot = round(rope_fraction * head_dim):
    x'_{2i}   = x_{2i} cos theta - x_{2i+1} sin theta
    x'_{2i+1} = x_{2i} sin theta + x_{2i+1} cos theta
so <R_m q, R_n k> depends on m - n only. Coordinates past d_rot are left alone. No parameters; the model
then has no learned position embedding (mla takes its decoupled rotary key from rope).""",
    source='Su et al. 2021, "RoFormer: enhanced transformer with rotary position embedding"',
    persona="leonardo_da_vinci",
)
