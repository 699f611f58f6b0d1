"""moe_mlp: a mixture of experts in place of the MLP, the "operation cards" of the Analytical Engine. Declaration
only (no framework-neutral numbers; its expert width is GPTConfig.moe_hidden); the modules are jaxmodel/moe_mlp.py
and torchport/moe_mlp.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    if not cfg.has("moe_mlp"):
        return []
    problems = []
    if not 1 <= cfg.moe_mlp_top_k <= cfg.moe_mlp_experts:
        problems.append(f"moe_mlp needs 1 <= moe_mlp_top_k <= moe_mlp_experts, got top_k={cfg.moe_mlp_top_k}, "
                        f"experts={cfg.moe_mlp_experts}")
    if cfg.moe_mlp_shared not in (0, 1) or cfg.moe_mlp_hidden < 0 or cfg.moe_mlp_bias_rate < 0:
        problems.append(f"moe_mlp needs moe_mlp_shared in (0, 1), moe_mlp_hidden >= 0, moe_mlp_bias_rate >= 0; got "
                        f"{cfg.moe_mlp_shared}, {cfg.moe_mlp_hidden}, {cfg.moe_mlp_bias_rate}")
    if cfg.moe_mlp_score not in ("sigmoid", "softmax"):
        problems.append(f"moe_mlp_score={cfg.moe_mlp_score!r}; expected 'sigmoid' or 'softmax'")
    return problems


COMPONENT = Component(
    "moe_mlp", ("mlp", "after_step"),
    "mixture of experts MLP: shared expert + top-k routed, bias-balanced (DeepSeek-V3)",
    # the balancing bias update reads the expert loads that the forward pass sows: the quantized blocks
    # (read through a variable transform) and the succession loss do not return them
    requires=(("block_weights", (None,)), ("objective", (None,))),
    # E routed experts, top-k of them per token, shared always-on experts (0 or 1), expert hidden width (0: 4 D /
    # (shared + top_k), the dense 4x MLP's active parameters), router scores sigmoid or softmax, rate u of the
    # balancing bias update
    options=("moe_mlp_experts", "moe_mlp_top_k", "moe_mlp_shared", "moe_mlp_hidden", "moe_mlp_score", "moe_mlp_bias_rate"),
    validate=validate,
    math="""\
One always-on shared expert plus E routed experts, of which each token uses its top k:
    s = sigmoid(W_r x)  (or softmax(W_r x)),   S = top_k(s + b)   (ties: the lower expert index first)
    y = shared(x) + sum_{e in S} g_e expert_e(x),   g_e = s_e / sum_{e' in S} s_e'
    expert_e(x) = W_proj[e] gelu(W_fc[e] x)        (the dense MLP's form; hidden width F = 4 D / (1 + k))
so each token's active parameters, (1 + k) * 2 D F, stay those of the dense 4x MLP. The bias b only selects;
it gets no gradient. After each optimizer step it moves toward balance (the after_step hook):
    b_e <- b_e + u * sign(mean_e' load_e' - load_e)
with load_e the number of (token, slot) selections of expert e in the step's batch. The experts are stored
stacked, W_fc (E, F, D) and W_proj (E, D, F); the forward computes every expert for every token and weights
them by g (0 for unselected experts): at E = 8, D = 32 cheaper than a gather/scatter dispatch.""",
    source="Dai et al. 2024 (DeepSeekMoE); DeepSeek-AI 2024 (DeepSeek-V3); Wang et al. 2024 (auxiliary-loss-free "
           "load balancing)",
    persona="ada_lovelace",
)
