"""Model and training-recipe configs, shared by the Flax reference and the PyTorch port.

`GPTConfig` keeps nanoGPT's fields and defaults as DreamTeam sets them, plus `components`: the names of
the persona components switched on, and the components' options. Each component is declared once in
dreamteam/components/<name>.py: its slots (which decide what it can be combined with), its options (fields of
GPTConfig, or of Recipe for training settings, each named after the component), their validation, its
mathematics. Any set of components whose slots do not clash builds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dreamteam import protocol
from dreamteam.components import COMPONENTS, conflicts

# Every declared component (dreamteam/components), in the order the project added them: the declarations'
# order (the order the qk transforms apply: rms_qknorm, then rope) with rope first. The evolutionary search
# records this list in its evolve.json and draws its mutations by index into it, so a resumed search needs
# it unchanged; a new component is declared last and so comes last here too.
KNOWN_COMPONENTS: tuple[str, ...] = tuple(sorted(COMPONENTS, key=lambda name: name != "rope"))
# components that give the model its positional information; with any of them on, no learned wpe
# (mla takes its rotary key from rope, else wpe)
POSITION_COMPONENTS: tuple[str, ...] = tuple(name for name, c in COMPONENTS.items() if c.positions)
# option -> the component that owns it (its declaration's `options`), for GPTConfig and Recipe fields alike
OPTION_OWNERS: dict[str, str] = {o: c.name for c in COMPONENTS.values() for o in c.options}
# Options renamed since run records, genomes and --set lines were written (old name -> current name): every
# place that reads a config or a recipe back goes through `current_names` (GPTConfig.from_fields, Recipe.from_fields).
RENAMED_OPTIONS: dict[str, str] = {"rms_eps": "rms_qknorm_eps"}
GOLDEN_RATIO = (1 + 5**0.5) / 2


class ConfigError(ValueError):
    """A config names something that does not exist or breaks the protocol."""


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = protocol.BLOCK_SIZE
    vocab_size: int = protocol.VOCAB_SIZE
    n_layer: int = protocol.N_LAYER
    n_head: int = protocol.N_HEAD
    n_embd: int = protocol.N_EMBD
    dropout: float = 0.0
    bias: bool = False  # biases in Linear layers and LayerNorms, as in nanoGPT
    components: tuple[str, ...] = ()
    # The components' options, each documented and validated in its declaration (dreamteam/components/<name>.py).
    # rope
    rope_base: float = 10000.0
    rope_fraction: float = 1.0
    # rms_qknorm
    rms_qknorm_eps: float = 1e-6
    rms_qknorm_qk_gain: float = 1.0
    # rms_qknorm: False leaves the queries and keys as they are (RMSNorm in place of LayerNorm alone)
    rms_qknorm_qk: bool = True
    # rms_qknorm: False keeps every LayerNorm (QK-norm alone)
    rms_qknorm_rmsnorm: bool = True
    # dyt
    dyt_alpha: float = 1.0
    # mla
    mla_kv_rank: int = 16
    mla_q_rank: int = 0
    mla_rope_dim: int = 4
    # difference_ssm
    difference_ssm_layers: tuple[int, ...] = (0, 2)
    difference_ssm_order: int = 4
    # fixed_point_qat
    fixed_point_qat_bits: int = 8
    # tiled_attention
    tiled_attention_block: int = 16
    # memory_tape
    memory_tape_slots: int = 8
    # laplace_bias
    laplace_bias_exponent: float = 8.0
    # laplace_glu
    laplace_glu_gate_scale: float = 1.0
    # succession_objective
    succession_objective_eps: float = 0.1
    succession_objective_zloss: float = 1e-4
    # posterior_mean
    posterior_mean_decay: float = 0.999
    # moe_mlp
    moe_mlp_experts: int = 8
    moe_mlp_top_k: int = 2
    moe_mlp_shared: int = 1
    moe_mlp_hidden: int = 0
    moe_mlp_score: str = "sigmoid"
    moe_mlp_bias_rate: float = 1e-3
    # adaptive_softmax
    adaptive_softmax_cutoffs: tuple[int, ...] = (2000, 6000)
    adaptive_softmax_div: int = 2
    adaptive_softmax_tied_tails: bool = False
    # byte_ngram_embedding: the byte n-grams of each id (n in [min, max], boundary-marked) hashed into `buckets`
    # rows of a table whose mean is added to the id's own row; the table's init std (0: the model starts as
    # without it) (dreamteam/components/byte_ngram_embedding.py)
    byte_ngram_embedding_buckets: int = 16384
    byte_ngram_embedding_min: int = 3
    byte_ngram_embedding_max: int = 6
    byte_ngram_embedding_init_std: float = 0.0
    # ngram_memory: the bigram's lowest order ("gt": the Good-Turing unigram; "kn": the continuation unigram
    # interpolated with it; dreamteam/components/ngram_memory.py), and the gate's initial bias b_g (0: g = 1/2)
    ngram_memory_low: str = "gt"
    ngram_memory_gate_bias: float = 0.0
    # ngram_memory: 3 for the Kneser-Ney trigram (its middle order from continuation counts), 2 for the bigram; the
    # trigram ended 300 iterations at val_loss 4.761 against the bigram's 4.997 on the baseline (seed 0, CPU;
    # docs/personas/alan_turing.md, "n-gram memory")
    ngram_memory_order: int = 3
    # ngram_memory: True trains the model's head on its own cross-entropy (the gradient of z is P - Y, not the
    # mixture's r (P - Y)) while the gate learns the mixture; the loss value and every evaluation stay -log p_mix
    ngram_memory_detach: bool = False
    # rms_embedding: the initial value of the gain shared by every normalized embedding row (the embedding's init
    # std: the rows start at the baseline's scale), and the epsilon under each row's mean square
    rms_embedding_gain: float = 0.02
    rms_embedding_eps: float = 1e-8

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must lie in [0, 1)")
        unknown = [c for c in self.components if c not in KNOWN_COMPONENTS]
        if unknown:
            raise ConfigError(
                f"unknown component(s) {unknown}; known components: {list(KNOWN_COMPONENTS) or 'none yet'}"
            )
        # what can be combined follows from the slots (dreamteam/components); then each declaration checks its options
        problems = conflicts(self.components) or [p for c in COMPONENTS.values() for p in c.problems(self)]
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_fields(cls, fields: dict | None) -> "GPTConfig":
        """The config that a run record's "config", a genome's model options or a checkpoint's record holds: JSON
        lists back to tuples, options renamed since (RENAMED_OPTIONS) under their current names."""
        return cls(**current_names(fields))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rotary_dim(self) -> int:
        return int(round(self.head_dim * self.rope_fraction))

    @property
    def mla_rotary_dim(self) -> int:
        """Width of mla's decoupled rotary key: mla_rope_dim with rope, 0 without (then wpe gives positions)."""
        return self.mla_rope_dim if self.has("mla") and self.has("rope") else 0

    @property
    def learned_positions(self) -> bool:
        """A learned position embedding wpe, unless a component gives positions another way."""
        return not any(self.has(c) for c in POSITION_COMPONENTS)

    @property
    def swiglu_hidden(self) -> int:
        """golden_swiglu hidden width round(phi^2 * n_embd): 3 matrices of 2.618 n_embd^2 ~ the 8 n_embd^2 of 4x GELU."""
        return int(round(GOLDEN_RATIO**2 * self.n_embd))

    def ssm_layer(self, layer_index: int) -> bool:
        """Whether block `layer_index` mixes tokens with difference_ssm instead of attention."""
        return self.has("difference_ssm") and layer_index in self.difference_ssm_layers
    @property
    def laplace_glu_hidden(self) -> int:
        """laplace_glu hidden width round(8 n_embd / 3): 3 matrices of D x F ~ the 8 D^2 of the 4x GELU MLP."""
        return int(round(8 * self.n_embd / 3))

    @property
    def laplace_glu_gate_std(self) -> float:
        """Init std of laplace_glu's c_gate: laplace_glu_gate_scale / sqrt(n_embd) (LeCun normal at scale 1)."""
        return self.laplace_glu_gate_scale / self.n_embd**0.5
    @property
    def moe_hidden(self) -> int:
        """moe_mlp expert hidden width: (shared + top_k) experts of 2 D F parameters ~ the dense 8 D^2."""
        if self.moe_mlp_hidden:
            return self.moe_mlp_hidden
        return max(1, int(round(4 * self.n_embd / (self.moe_mlp_shared + self.moe_mlp_top_k))))

    def has(self, component: str) -> bool:
        return component in self.components

    def fillers(self, slot: str) -> tuple[str, ...]:
        """The components switched on that fill `slot`, in declaration order (dreamteam/components)."""
        from dreamteam.components import COMPONENTS, SLOTS

        if slot not in SLOTS:
            raise KeyError(f"unknown slot {slot!r}; slots: {list(SLOTS)}")
        return tuple(c.name for c in COMPONENTS.values() if c.name in self.components and slot in c.slots)

    def filler(self, slot: str) -> str | None:
        """The component that fills the exclusive `slot`, None where the model's default does."""
        names = self.fillers(slot)
        return names[0] if names else None

    def replace(self, **changes) -> "GPTConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: optimizer, schedule, regularization. Free within the protocol.

    The defaults are the baseline: AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on tensors of two
    or more dimensions), constant learning rate 3e-4, gradient clipping at global norm 1.0.
    """

    optimizer: str = "adamw"
    learning_rate: float = 3e-4
    schedule: str = "constant"  # "constant" or "cosine" (linear warmup, cosine decay to min_lr)
    warmup_iters: int = 0
    min_lr: float = 3e-4
    decay_iters: int = protocol.MAX_ITERS
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    # The options of the components that act on training (documented and validated in their declarations,
    # dreamteam/components/<name>.py). muon: Muon's rate follows the same schedule, scaled by muon_lr / learning_rate
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_weight_decay: float = 0.0
    muon_ns_steps: int = 5
    muon_bf16: bool = False
    # good_turing_prior: the output bias's rate as a fraction of the scheduled AdamW rate
    good_turing_prior_lr_ratio: float = 1.0

    def __post_init__(self):
        if self.optimizer not in ("adamw",):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of ['adamw']")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected 'constant' or 'cosine'")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate}; expected > 0")
        problems = [p for c in COMPONENTS.values() for p in c.problems(self)]
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_fields(cls, fields: dict | None) -> "Recipe":
        """The recipe that a run record's "recipe" or a genome holds (as GPTConfig.from_fields)."""
        return cls(**current_names(fields))

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


def current_names(fields: dict | None) -> dict:
    """Fields of a GPTConfig or a Recipe as any version wrote them (a run record, a genome, --set): options renamed
    since under their current names, JSON lists as tuples. Both an old and a current name is one clear error."""
    out = {}
    for key, value in (fields or {}).items():
        name = RENAMED_OPTIONS.get(key, key)
        if name in out:
            was = next(o for o, n in RENAMED_OPTIONS.items() if n == name)
            raise ConfigError(f"{was} and {name} are one option (renamed {was} -> {name}); give it once")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def learning_rate(it: int, recipe: Recipe) -> float:
    """The learning rate at iteration `it` (0-based), as a Python float, the same for both frameworks.

    cosine: lr * (it + 1) / warmup during warmup, then
    min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr), progress = (it - warmup) / (decay - warmup).
    """
    import math

    if recipe.schedule == "constant":
        return recipe.learning_rate
    if it < recipe.warmup_iters:
        return recipe.learning_rate * (it + 1) / recipe.warmup_iters
    if it >= recipe.decay_iters:
        return recipe.min_lr
    progress = (it - recipe.warmup_iters) / max(1, recipe.decay_iters - recipe.warmup_iters)
    return recipe.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (recipe.learning_rate - recipe.min_lr)


@dataclass(frozen=True)
class Persona:
    """A persona is data: its model config (components switched on) and its training recipe."""

    name: str
    model: GPTConfig = field(default_factory=GPTConfig)
    recipe: Recipe = field(default_factory=Recipe)
    description: str = ""
