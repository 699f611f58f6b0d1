"""dyt: Dynamic Tanh in place of every LayerNorm. Declaration only (no framework-neutral numbers); the modules are
jaxmodel/dyt.py and torchport/dyt.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    if not cfg.dyt_alpha > 0:
        return [f"dyt_alpha={cfg.dyt_alpha}; expected a positive initial scale"]
    return []


COMPONENT = Component(
    "dyt", ("norm",), "Dynamic Tanh, weight * tanh(alpha x) (+ bias), in place of every LayerNorm",
    # dyt_alpha: the initial value of each norm's alpha (one learned scalar per norm)
    options=("dyt_alpha",),
    validate=validate,
    math="""\
DyT(x) = weight * tanh(alpha * x) (+ bias)          in place of every LayerNorm (blocks and ln_f)
alpha is one learned scalar per norm, starting at dyt_alpha; weight starts at 1, the bias (with the model's `bias`
only, as LayerNorm's) at 0. Elementwise: no statistic over the features, so no invariance to the input's scale.
The output is bounded, |DyT(x)| <= |weight| + |bias| for every x; for |alpha x| << 1 it is linear,
weight * alpha * x (the error is at most |weight| |alpha x|^3 / 3), and large inputs saturate. The derivative
in alpha is weight * x * (1 - tanh^2(alpha x)). A LayerNorm in a trained transformer maps most of its inputs
near-linearly and squashes the outliers, an S-shaped curve that tanh(alpha x) imitates without computing a mean
or a variance. Where data are few for the model (here 302k training tokens seen 17 times), the bounding acts as a
regularizer, saturated units passing no gradient.""",
    source='Zhu, Chen, He, LeCun and Liu 2025, "Transformers without normalization"',
    persona="leonardo_da_vinci",
)
