"""laplace_glu: the MLP gated by MEGA's Laplace function. Declaration only (no framework-neutral numbers; its
width and gate init are GPTConfig.laplace_glu_hidden and laplace_glu_gate_std); the modules are
jaxmodel/laplace_glu.py and torchport/laplace_glu.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    if not cfg.laplace_glu_gate_scale > 0:
        return [f"laplace_glu_gate_scale={cfg.laplace_glu_gate_scale} must be > 0"]
    return []


COMPONENT = Component(
    "laplace_glu", ("mlp",), "MLP gated by MEGA's Laplace function 0.5 (1 + erf((x - mu) / (sigma sqrt 2)))",
    options=("laplace_glu_gate_scale",),  # init std of c_gate = scale / sqrt(n_embd): the gate's inputs have std ~ scale
    validate=validate,
    math="""\
    f(x) = 0.5 * (1 + erf((x - mu) / (sigma sqrt 2))),   mu = sqrt(1/2),  sigma = sqrt(1/(4 pi))
    y = c_proj( f(c_gate x) * (c_fc x) )
f is the CDF of N(mu, sigma^2): f' is the Gaussian density, f(mu) = 1/2, f rises from 0 to 1 around mu; MEGA
chose mu, sigma so that f approximates relu^2 near the origin while staying bounded. Hidden width
F = round(8 D / 3): the three D x F matrices hold ~ the 8 D^2 parameters of the 4x GELU MLP.
Initialization: c_gate ~ normal(0, laplace_glu_gate_scale / sqrt(D)) (c_fc and c_proj keep GPT-2's 0.02 and
0.02 / sqrt(2 n_layer)): f is shaped for inputs of unit scale; at 0.02 the gate's inputs would have std ~0.11
and every gate would start nearly shut (f(0) = 0.006), leaving c_proj gradients at Adam's epsilon.""",
    source='Ma et al. 2022, "Mega: moving average equipped gated attention"; Dauphin et al. 2017 and Shazeer 2020 (GLU)',
    persona="pierre_simon_laplace",
)
