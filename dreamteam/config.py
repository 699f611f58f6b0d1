"""Model and training-recipe configs, shared by the Flax reference and the PyTorch port.

`GPTConfig` keeps nanoGPT's fields and defaults as DreamTeam sets them, plus `components`: the names of
the persona components switched on. Components are independent switches, so any subset builds;
each one's options live in the same dataclass with the component's name as prefix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dreamteam import protocol

# Every component that exists on both sides (jaxmodel and torchport) and is covered by parity.
# A persona issue adds its names here together with the modules, the tests and the parity checks.
KNOWN_COMPONENTS: tuple[str, ...] = (
    "rope",  # rotary positions (Su et al. 2021)
    "rms_qknorm",  # RMSNorm everywhere and per-head QK-norm
    "golden_swiglu",  # SwiGLU MLP of golden-ratio width
    "mla",  # multi-head latent attention (DeepSeek-V2)
    "moe_mlp",  # mixture of experts MLP: shared expert + top-k routed, bias-balanced (DeepSeek-V3)
    "adaptive_softmax",  # frequency-clustered output distribution (Grave et al. 2017)
)
# components that give the model its positional information; with any of them on, no learned wpe
POSITION_COMPONENTS = ("rope", "mla")
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
    # rope: rotation angle p * rope_base^(-2i / d_rot) on the first d_rot = rope_fraction * head_dim dims
    rope_base: float = 10000.0
    rope_fraction: float = 1.0
    # rms_qknorm: the epsilon of every RMSNorm
    rms_eps: float = 1e-6
    # mla: latent width r of keys and values, of queries (0: no query latent), decoupled rotary width
    mla_kv_rank: int = 16
    mla_q_rank: int = 0
    mla_rope_dim: int = 4
    # moe_mlp: E routed experts, top-k of them per token, shared always-on experts (0 or 1), expert hidden
    # width (0: 4 D / (shared + top_k), the dense 4x MLP's active parameters), router scores sigmoid or
    # softmax, rate u of the balancing bias update b_e <- b_e + u sign(mean load - load_e)
    moe_mlp_experts: int = 8
    moe_mlp_top_k: int = 2
    moe_mlp_shared: int = 1
    moe_mlp_hidden: int = 0
    moe_mlp_score: str = "sigmoid"
    moe_mlp_bias_rate: float = 1e-3
    # adaptive_softmax: head = the cutoffs[0] most frequent ids, then a tail cluster per further cutoff and
    # one for the rest of the ids seen in training, and a last one for every id never seen; tail cluster i
    # (1-based) projects to width n_embd // div^i
    adaptive_softmax_cutoffs: tuple[int, ...] = (2000, 6000)
    adaptive_softmax_div: int = 2

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        unknown = [c for c in self.components if c not in KNOWN_COMPONENTS]
        if unknown:
            raise ConfigError(
                f"unknown component(s) {unknown}; known components: {list(KNOWN_COMPONENTS) or 'none yet'}"
            )
        if self.rotary_dim % 2 or (self.has("rope") and self.rotary_dim == 0):
            raise ConfigError(f"rope_fraction={self.rope_fraction} gives {self.rotary_dim} rotated dims of {self.head_dim}; expected an even number > 0")
        if self.has("mla") and (self.mla_rope_dim % 2 or self.mla_rope_dim <= 0 or self.mla_kv_rank <= 0):
            raise ConfigError(f"mla needs an even mla_rope_dim > 0 and mla_kv_rank > 0, got {self.mla_rope_dim}, {self.mla_kv_rank}")
        if self.has("moe_mlp"):
            if not 1 <= self.moe_mlp_top_k <= self.moe_mlp_experts:
                raise ConfigError(f"moe_mlp needs 1 <= moe_mlp_top_k <= moe_mlp_experts, got top_k={self.moe_mlp_top_k}, experts={self.moe_mlp_experts}")
            if self.moe_mlp_shared not in (0, 1) or self.moe_mlp_hidden < 0 or self.moe_mlp_bias_rate < 0:
                raise ConfigError(f"moe_mlp needs moe_mlp_shared in (0, 1), moe_mlp_hidden >= 0, moe_mlp_bias_rate >= 0; got "
                                  f"{self.moe_mlp_shared}, {self.moe_mlp_hidden}, {self.moe_mlp_bias_rate}")
            if self.moe_mlp_score not in ("sigmoid", "softmax"):
                raise ConfigError(f"moe_mlp_score={self.moe_mlp_score!r}; expected 'sigmoid' or 'softmax'")
        if self.has("adaptive_softmax"):
            c = tuple(self.adaptive_softmax_cutoffs)
            if not c or any(b <= a for a, b in zip(c, c[1:])) or c[0] < 1 or c[-1] > self.vocab_size:
                raise ConfigError(f"adaptive_softmax_cutoffs={c}: expected increasing counts of ids in [1, vocab_size={self.vocab_size}]")
            if self.adaptive_softmax_div < 1 or self.n_embd // self.adaptive_softmax_div ** (len(c) + 1) < 1:
                raise ConfigError(f"adaptive_softmax_div={self.adaptive_softmax_div}: the last tail cluster's width "
                                  f"n_embd // div^{len(c) + 1} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must lie in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rotary_dim(self) -> int:
        return int(round(self.head_dim * self.rope_fraction))

    @property
    def learned_positions(self) -> bool:
        """A learned position embedding wpe, unless a component gives positions another way."""
        return not any(self.has(c) for c in POSITION_COMPONENTS)

    @property
    def swiglu_hidden(self) -> int:
        """golden_swiglu hidden width round(phi^2 * n_embd): 3 matrices of 2.618 n_embd^2 ~ the 8 n_embd^2 of 4x GELU."""
        return int(round(GOLDEN_RATIO**2 * self.n_embd))

    @property
    def moe_hidden(self) -> int:
        """moe_mlp expert hidden width: (shared + top_k) experts of 2 D F parameters ~ the dense 8 D^2."""
        if self.moe_mlp_hidden:
            return self.moe_mlp_hidden
        return max(1, int(round(4 * self.n_embd / (self.moe_mlp_shared + self.moe_mlp_top_k))))

    def has(self, component: str) -> bool:
        return component in self.components

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

    def __post_init__(self):
        if self.optimizer not in ("adamw",):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of ['adamw']")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected 'constant' or 'cosine'")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


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
