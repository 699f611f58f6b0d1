"""The persona registry: name -> Persona (components + recipe).

A persona is a config, not a fork of the model. `build(name, add=..., remove=...)` gives any persona with
components switched on or off, which is what ablations and the evolutionary search use.
"""

from __future__ import annotations

from dreamteam.config import GPTConfig, Persona, Recipe

BASELINE = Persona(
    name="baseline",
    model=GPTConfig(),
    recipe=Recipe(),
    description="nanoGPT as DreamTeam configures it: learned positions, LayerNorm, GELU MLP, tied head, AdamW 3e-4.",
)

# Starting recipe from docs/personas.md's notes (warmup 200, cosine 3e-3 -> 3e-4, weight decay 0.01 took the
# baseline from val_loss 5.14 to 4.84 on one seed); not yet tuned for this persona.
COSINE_3E3 = Recipe(learning_rate=3e-3, schedule="cosine", warmup_iters=200, min_lr=3e-4, weight_decay=0.01)

# The QK-norm gains start at 1.86, Henry et al.'s (2020) initial logit scale log2(T^2 - T) = 12 at T = 64
# (g^2 sqrt(12) = 12): with unit gains attention starts soft (logits within +-3.5). With 1.86, seeds 0, 1, 2
# ended lower, 4.826 +- 0.022 against 4.880 +- 0.042 (CPU, `dreamteam bench --set rms_qknorm_qk_gain=1.86`;
# docs/personas/leonardo_da_vinci.md "Recipe tuning"). The recipe: COSINE_3E3 a third faster (4e-3 -> 4e-4),
# with the weights evaluated as their running average (Laplace's posterior_mean, decay 0.999, taken as a training
# recipe: it changes no layer). The rate alone gave 4.805 +- 0.032 on seeds 0, 1, 2; with the average, 4.756 +-
# 0.021, lower on every seed than either (CPU, `dreamteam bench --personas leonardo_da_vinci+posterior_mean --set
# learning_rate=0.004 min_lr=0.0004`; the persona page's "Toward 4.80"). The old recipe: 4.826 +- 0.022.
LEONARDO = Persona(
    name="leonardo_da_vinci",
    model=GPTConfig(components=("rope", "mla", "rms_qknorm", "golden_swiglu", "posterior_mean"), rms_qknorm_qk_gain=1.86),
    recipe=COSINE_3E3.replace(learning_rate=4e-3, min_lr=4e-4),
    description="rotary positions, multi-head latent attention, RMSNorm + QK-norm, golden-ratio SwiGLU; "
                "trained a third faster and evaluated as the average of its weights.",
)

# Recipe: COSINE_3E3 with weight decay 0.1. Of the settings tried with `dreamteam bench --set` (CPU,
# docs/measurements.md "Recipe tuning"), weight_decay=0.1 ended lower on each of seeds 0, 1, 2 (4.796 +- 0.025 against
# 4.820 +- 0.027 with 0.01); lr 5e-3 was worse. Its float32 parity trajectory holds with fixed_point_qat's codes
# aligned (parity/checks.py, CodeAlignment; docs/personas/charles_babbage.md "Parity").
BABBAGE = Persona(
    name="charles_babbage",
    model=GPTConfig(components=("difference_ssm", "fixed_point_qat", "tiled_attention")),
    recipe=COSINE_3E3.replace(weight_decay=0.1),
    description="difference-engine state-space mixer in layers 0 and 2, int8 fixed-point QAT, exact tiled attention.",
)

# Muon settings from the literature, not tuned here: lr 0.02 and Nesterov momentum 0.95 (Jordan et al. 2024,
# modded-nanogpt), weight decay 0.01 as the AdamW part's. The n-gram memory (Kneser-Ney trigram of train.bin,
# mixed in through a learned gate; trained on the estimate that leaves each target's own occurrence out) took
# the place of the Good-Turing output bias, whose ablation measured it costing loss: 3 seeds, 4.605 +- 0.018
# against 4.908 +- 0.012 (CPU, `dreamteam bench --personas alan_turing+ngram_memory-good_turing_prior`;
# docs/personas/alan_turing.md). Good-Turing and Kneser-Ney smoothing stay Turing's theme: the frequency of
# the unseen estimated from the seen.
ALAN_TURING = Persona(
    name="alan_turing",
    model=GPTConfig(components=("muon", "memory_tape", "ngram_memory")),
    recipe=COSINE_3E3.replace(muon_lr=0.02, muon_momentum=0.95, muon_weight_decay=0.01),
    description="Muon (orthogonalized updates, condition number one), persistent memory tape slots in attention, "
                "a Kneser-Ney n-gram memory of the training text mixed in through a learned gate.",
)

# COSINE_3E3: of the alternatives tried with `dreamteam bench --set` (seed 0, CPU; docs/measurements.md "Recipe
# tuning"), weight_decay=0.1 and succession_objective_eps=0.2 were both worse, so it stays.
LAPLACE = Persona(
    name="pierre_simon_laplace",
    model=GPTConfig(components=("laplace_bias", "laplace_glu", "succession_objective", "posterior_mean")),
    recipe=COSINE_3E3,
    description="Laplace-kernel (exponential-decay) attention bias, Laplace-CDF gated MLP, rule-of-succession "
    "smoothed targets + z-loss, posterior-mean (EMA) weights.",
)

# Token embeddings composed from the bytes of each id's spelling (byte_ngram_embedding) in place of the adaptive
# softmax: the ablation measured adaptive_softmax costing +0.222 (it starves the rare ids' logits), while the
# composed embedding lets rare ids share parameters through their spelling. Swapped on 3 seeds (CPU, `dreamteam
# bench --personas ada_lovelace+byte_ngram_embedding-adaptive_softmax`): 4.792 +- 0.027 against 5.035 +- 0.015
# (docs/personas/ada_lovelace.md). Tokenization structure stays Ada's theme: symbols processed by structure.
ADA = Persona(
    name="ada_lovelace",
    model=GPTConfig(components=("moe_mlp", "byte_ngram_embedding")),
    recipe=COSINE_3E3,
    description="operation-card mixture of experts (shared + top-2 of 8, bias-balanced), token embeddings composed "
                "from the byte n-grams of each id's spelling, tied into the output head; min-p sampling.",
)

# The winner of the evolutionary search search2 (`dreamteam evolve`, population 8 over 4 generations, every
# candidate a full protocol run at seed 0 on the CPU, then the best three genomes at seeds 0, 1, 2;
# docs/evolve.md): gen_003/cand_04, exactly this genome. alan_turing crossed with charles_babbage's
# difference-engine mixer (generation 1, AdamW's rate moved from 3e-3 to 3.211e-3 by a log-normal mutation,
# min_lr following it), then crossed with `tiled_attention+ngram_memory+laplace_bias`, which gave it Babbage's
# tiled attention and AdamW weight decay 0.1 (generation 3). Confirmed at seeds 0, 1, 2: 4.5617, 4.5561,
# 4.5562 (4.558 +- 0.003; docs/personas/dream_team.md). Each component keeps the persona its theme belongs to
# (components/NAME.py `persona`), which `dreamteam personas` and the README name.
DREAM_TEAM = Persona(
    name="dream_team",
    model=GPTConfig(components=("ngram_memory", "difference_ssm", "muon", "memory_tape", "tiled_attention")),
    recipe=ALAN_TURING.recipe.replace(learning_rate=0.003211, min_lr=0.0003211, weight_decay=0.1),
    description="the search's champion: Turing's Kneser-Ney n-gram memory, Muon and memory tape; Babbage's "
                "difference-engine state-space mixer and exact tiled attention.",
)

PERSONAS: dict[str, Persona] = {p.name: p for p in (BASELINE, LEONARDO, ADA, BABBAGE, LAPLACE, ALAN_TURING, DREAM_TEAM)}


class UnknownPersonaError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def get(name: str) -> Persona:
    """The registered persona called `name`; one clear error listing the known names otherwise."""
    try:
        return PERSONAS[name]
    except KeyError:
        raise UnknownPersonaError(f"unknown persona {name!r}; known personas: {sorted(PERSONAS)}") from None


def build(name: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Persona:
    """Persona `name` with components added or removed (ablations, baseline + one component)."""
    persona = get(name)
    missing = [c for c in remove if c not in persona.model.components]
    if missing:
        raise ValueError(f"persona {name!r} has no component(s) {missing} to remove")
    components = tuple(c for c in persona.model.components if c not in remove)
    components += tuple(c for c in add if c not in components)
    if components == persona.model.components:
        return persona
    label = name + "".join(f"+{c}" for c in add) + "".join(f"-{c}" for c in remove)
    return Persona(label, persona.model.replace(components=components), persona.recipe, persona.description)


def from_label(label: str) -> Persona:
    """The persona a label names: a registered name, or one with components switched on and off as `build`
    labels it ('pierre_simon_laplace-laplace_glu', 'baseline+rope'), so that one ablation variant can be run
    alone. One clear error for an unknown persona or component, or a label `build` would spell otherwise."""
    import re

    base, *changes = re.split(r"(?=[+-])", label)
    add = tuple(c[1:] for c in changes if c.startswith("+"))
    remove = tuple(c[1:] for c in changes if c.startswith("-"))
    try:
        built = build(base, add=add, remove=remove)
    except ValueError as e:  # ConfigError included
        raise UnknownPersonaError(f"persona label {label!r}: {e}") from None
    if built.name != label:
        raise UnknownPersonaError(f"persona label {label!r}: write it as {built.name!r} (adds first, then removals), "
                                  "the name its runs are recorded under")
    return built  # the registered persona itself when the label names no change
