"""The component declarations: every persona component, declared once and framework-neutral.

A declaration names the component, the slots of the model it fills, what it requires of other slots, and
whether it gives the model its positions. The models (jaxmodel/model.py, torchport/model.py) assemble by
slot: they ask a config which component fills a slot (`GPTConfig.filler`, `GPTConfig.fillers`), never for a
list of names. Two components that claim one exclusive slot cannot be combined; a component whose
requirement on another slot is not met cannot be combined with what fills it. Nothing else decides
compatibility.

This package imports neither torch nor jax.
"""

from __future__ import annotations

from dataclasses import dataclass

# The slots of the model and of its training step, in the order a forward pass and a step meet them.
# An exclusive slot holds at most one component; the others hold several, applied in declaration order.
SLOTS: dict[str, bool] = {  # name -> exclusive
    "token_embedding": True,  # how an id becomes a vector (default: its row of wte)
    "norm": True,  # the norm of every block and of ln_f (default: LayerNorm)
    "token_mixer": True,  # a mixer that replaces attention in some layers (default: attention everywhere)
    "qkv": True,  # queries, keys and values from x (default: the fused c_attn projection)
    "qk_transform": False,  # maps applied to q and k per head (norm, rotation), in order
    "score_bias": True,  # an additive bias of the attention logits (default: the causal mask alone)
    "extra_kv": True,  # keys and values every query attends to besides the context's
    "attend": True,  # how softmax(q k^T / sqrt(d) + bias) v is computed (default: the fused kernel)
    "mlp": True,  # the block's MLP (default: 4x GELU)
    "block_weights": True,  # a transform of the blocks' matrices as the forward pass reads them
    "head": True,  # the output distribution (default: logits tied to wte)
    "output_bias": True,  # a trained bias of the tied head's logits
    "head_mixture": True,  # a second next-token distribution mixed with the model's
    "objective": True,  # the training loss (default: mean cross-entropy)
    "optimizer": True,  # the optimizer of some parameters (default: AdamW for all)
    "weight_averaging": True,  # the weights used for evaluation (default: the trained ones)
    "after_step": False,  # updates after each optimizer step, outside the gradient
}


@dataclass(frozen=True)
class Component:
    name: str
    slots: tuple[str, ...]  # the slots it fills
    summary: str  # one line: what it is and where it comes from
    # {slot: fillers allowed there}; None in the tuple stands for the slot's default (nothing fills it)
    requires: tuple[tuple[str, tuple[str | None, ...]], ...] = ()
    positions: bool = False  # it gives the model positional information (then there is no learned wpe)


COMPONENTS: dict[str, Component] = {c.name: c for c in (
    # qk transforms apply in this order: normalize, then rotate
    Component("rms_qknorm", ("norm", "qk_transform"), "RMSNorm everywhere and per-head QK-norm"),
    Component("rope", ("qk_transform",), "rotary positions (Su et al. 2021)", positions=True),
    Component("golden_swiglu", ("mlp",), "SwiGLU MLP of golden-ratio width"),
    Component("mla", ("qkv",), "multi-head latent attention (DeepSeek-V2)"),
    Component("difference_ssm", ("token_mixer",),
              "difference-engine state-space token mixer in place of attention in some layers"),
    Component("fixed_point_qat", ("block_weights",),
              "fixed-point (int b) fake quantization of the block matrices, straight-through"),
    Component("tiled_attention", ("attend",),
              "exact attention by key blocks with the online softmax (FlashAttention's algorithm)"),
    Component("muon", ("optimizer",), "Muon optimizer for the 2-D matrices inside the blocks (Jordan et al. 2024)"),
    # the latent attention builds no per-head keys a tape could extend
    Component("memory_tape", ("extra_kv",),
              "persistent memory slots of keys and values in attention (Sukhbaatar et al. 2019)",
              requires=(("qkv", (None,)),)),
    Component("good_turing_prior", ("output_bias",),
              "output bias initialized to log of the Good-Turing token probabilities of train.bin",
              requires=(("head", (None,)),)),
    # the decay needs a position for every key: the tape's slots have none; the latent attention has its own
    Component("laplace_bias", ("score_bias",),
              "exponential-decay (Laplace-kernel) attention bias -s_h (i - j), learned rates (ALiBi-like)",
              requires=(("extra_kv", (None,)), ("qkv", (None,))), positions=True),
    Component("laplace_glu", ("mlp",), "MLP gated by MEGA's Laplace function 0.5 (1 + erf((x - mu) / (sigma sqrt 2)))"),
    Component("succession_objective", ("objective",),
              "training targets smoothed toward the add-one (rule-of-succession) prior, + z-loss",
              requires=(("head", (None,)),)),
    Component("posterior_mean", ("weight_averaging",),
              "EMA (Polyak) average of the weights, used for evaluation and the checkpoint"),
    # the balancing bias update reads the expert loads that the forward pass sows: the quantized blocks
    # (read through a variable transform) and the succession loss do not return them
    Component("moe_mlp", ("mlp", "after_step"),
              "mixture of experts MLP: shared expert + top-k routed, bias-balanced (DeepSeek-V3)",
              requires=(("block_weights", (None,)), ("objective", (None,)))),
    Component("adaptive_softmax", ("head",), "frequency-clustered output distribution (Grave et al. 2017)"),
    # the mixture needs the tied head's softmax and trains on -log p_mix (dreamteam/components/ngram_memory.py)
    Component("ngram_memory", ("head_mixture",),
              "interpolated Kneser-Ney bigram or trigram of train.bin (Good-Turing lowest order) mixed in by a learned gate",
              requires=(("head", (None,)), ("objective", (None,)))),
)}


def conflicts(components: tuple[str, ...]) -> list[str]:
    """Why `components` cannot be combined: one sentence per clash, [] where they can."""
    problems = []
    fillers: dict[str, list[str]] = {}
    for name in components:
        for slot in COMPONENTS[name].slots:
            fillers.setdefault(slot, []).append(name)
    for slot, names in fillers.items():
        if SLOTS[slot] and len(names) > 1:
            who = f"{', '.join(names[:-1])} and {names[-1]}"
            problems.append(f"{who} {'both' if len(names) == 2 else 'all'} fill the {slot} slot; switch on one of them")
    for name in components:
        for slot, allowed in COMPONENTS[name].requires:
            there = fillers.get(slot, [None])
            for other in there:
                if other not in allowed:
                    problems.append(f"{name} needs the {slot} slot "
                                    f"{'at its default' if allowed == (None,) else 'filled by one of ' + str(allowed)}"
                                    f", but {other} fills it")
    return problems
