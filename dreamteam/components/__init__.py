"""The component declarations: every persona component, declared once and framework-neutral.

A declaration (`Component`) names the component, the slots of the model it fills, what it requires of
other slots, whether it gives the model its positions, its options (the GPTConfig or Recipe fields it owns,
each named after it), their validation, its mathematics and its source. Each component has one module
here, dreamteam/components/<name>.py, holding its declaration (COMPONENT) and its framework-neutral math
(numpy or plain Python: the numbers both models start from or share); the package finds these modules itself
(COMPONENTS). Its Flax and torch modules (jaxmodel/<name>.py, torchport/<name>.py) compute what the
declaration's `math` states and point to it.

The models (jaxmodel/model.py, torchport/model.py) assemble by slot: they ask a config which component
fills a slot (`GPTConfig.filler`, `GPTConfig.fillers`), never for a list of names, and build there what the
component's module of their framework lists for that slot in its `FILLS` ({slot: constructor}). Two components that
claim one exclusive slot cannot be combined; a component whose requirement on another slot is not met
cannot be combined with what fills it (`conflicts`). Nothing else decides compatibility.

This package imports neither torch nor jax.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
# the slots of the training step that the training loops build themselves (train_mps.py, jaxmodel/train.py); the
# models build the others, each from the FILLS of the module that fills it; after_step's hooks too, which the loops
# run through the model (torchport GPT.after_step, jaxmodel.model.after_step_hooks)
STEP_SLOTS = ("objective", "optimizer", "weight_averaging")
# the slots that belong to the training recipe, not to the network: how the weights are updated and which of them
# are evaluated. docs/personas.md (point 5) leaves the recipe free, so a persona may switch on a component of these
# slots from another persona's theme; every other component it switches on is its own.
RECIPE_SLOTS = ("optimizer", "weight_averaging")

# the five personas whose themes the components come from (a declaration's `persona`)
THEMES = ("ada_lovelace", "charles_babbage", "pierre_simon_laplace", "alan_turing", "leonardo_da_vinci")

# the dataclasses that hold options: the model's config and the training recipe (dreamteam/config.py)
OPTION_HOLDERS = ("GPTConfig", "Recipe")


@dataclass(frozen=True)
class Component:
    name: str
    slots: tuple[str, ...]  # the slots it fills
    summary: str  # one line: what it is and where it comes from
    # {slot: fillers allowed there}; None in the tuple stands for the slot's default (nothing fills it)
    requires: tuple[tuple[str, tuple[str | None, ...]], ...] = ()
    positions: bool = False  # it gives the model positional information (then there is no learned wpe)
    # the fields it owns, each named `<name>_...`, all in one dataclass: GPTConfig (the model) or Recipe (training)
    options: tuple[str, ...] = ()
    options_in: str = "GPTConfig"
    # validate(holder) -> problems (one sentence each, [] when fine), holder the GPTConfig or the Recipe that
    # holds the options. The GPTConfig's (Recipe's) __post_init__ runs it for every declaration whose options
    # it holds; where a check applies only with the component switched on, validate says so (cfg.has(name)).
    validate: Callable[[Any], list[str]] | None = None
    math: str = ""  # what it computes, in plain text: the one statement the Flax and torch modules point to
    source: str = ""  # the paper or idea it comes from
    notes: str = ""  # how the two frameworks implement it, where that is worth a line
    # the persona whose theme it belongs to (docs/personas.md), whether or not that persona switches it on today:
    # what a combination of components (the search's winner, dream_team) credits each one to
    persona: str = ""

    def __post_init__(self):
        unknown = [s for s in self.slots + tuple(s for s, _ in self.requires) if s not in SLOTS]
        if unknown:
            raise ValueError(f"component {self.name}: unknown slot(s) {unknown}; slots: {list(SLOTS)}")
        if self.options_in not in OPTION_HOLDERS:
            raise ValueError(f"component {self.name}: options_in={self.options_in!r}; expected one of {OPTION_HOLDERS}")
        unprefixed = [o for o in self.options if not o.startswith(self.name + "_")]
        if unprefixed:
            raise ValueError(f"component {self.name}: option(s) {unprefixed} must be named {self.name}_...")

    def problems(self, holder) -> list[str]:
        """What is wrong with this component's options in `holder` (a GPTConfig or a Recipe): [] when fine."""
        if self.validate is None or type(holder).__name__ != self.options_in:
            return []
        return list(self.validate(holder))


# The order of the declarations: the qk transforms apply in it (normalize, then rotate), the after-step hooks too,
# and the evolutionary search draws its mutations by index into it (dreamteam.config.KNOWN_COMPONENTS, rope
# first). These are the components declared before the package found its modules itself, in their order; then
# those declared since (ADDED_SINCE, in the order they were added: append a new one there, so that it comes last
# and a recorded search's mutation indices keep their meaning); any other module after them, in name order.
FIXED_ORDER = (
    "rms_qknorm", "rope", "golden_swiglu", "mla", "difference_ssm", "fixed_point_qat", "tiled_attention", "muon",
    "memory_tape", "good_turing_prior", "laplace_bias", "laplace_glu", "succession_objective", "posterior_mean",
    "moe_mlp", "adaptive_softmax", "byte_ngram_embedding", "ngram_memory",
)
ADDED_SINCE = ("relu2_mlp", "rms_embedding", "dyt")


def _declarations() -> dict[str, Component]:
    """{name: COMPONENT} of every module of this package, dreamteam/components/<name>.py, in declaration order."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        component = getattr(importlib.import_module(f"{__name__}.{info.name}"), "COMPONENT", None)
        if not isinstance(component, Component) or component.name != info.name:
            raise ImportError(f"dreamteam/components/{info.name}.py must declare COMPONENT = Component({info.name!r}, ...)")
        found[info.name] = component
    missing = [name for name in FIXED_ORDER if name not in found]
    if missing:
        raise ImportError(f"no declaration module for {missing}: a recorded search draws them by index")
    ordered = (*FIXED_ORDER, *(name for name in ADDED_SINCE if name in found))
    return {name: found[name] for name in (*ordered, *sorted(set(found) - set(ordered)))}


COMPONENTS: dict[str, Component] = _declarations()


def conflicts(components: tuple[str, ...]) -> list[str]:
    """Why `components` cannot be combined: one sentence per clash, [] where they can."""
    problems = []
    components = tuple(dict.fromkeys(components))  # a name listed twice is one component switched on
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
