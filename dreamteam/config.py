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
    "difference_ssm",  # difference-engine state-space token mixer in place of attention in some layers
    "fixed_point_qat",  # fixed-point (int b) fake quantization of the block matrices, straight-through
    "tiled_attention",  # exact attention by key blocks with the online softmax (FlashAttention's algorithm)
    "muon",  # Muon optimizer for the 2-D matrices inside the blocks (Jordan et al. 2024); settings: Recipe.muon_*
    "memory_tape",  # persistent memory slots of keys and values in attention (Sukhbaatar et al. 2019)
    "good_turing_prior",  # output bias initialized to log of the Good-Turing token probabilities of train.bin
    "laplace_bias",  # exponential-decay (Laplace-kernel) attention bias -s_h (i - j), learned rates (ALiBi-like)
    "laplace_glu",  # MLP gated by MEGA's Laplace function 0.5 (1 + erf((x - mu) / (sigma sqrt 2)))
    "succession_objective",  # training targets smoothed toward the add-one (rule-of-succession) prior, + z-loss
    "posterior_mean",  # EMA (Polyak) average of the weights, used for evaluation and the checkpoint
    "moe_mlp",  # mixture of experts MLP: shared expert + top-k routed, bias-balanced (DeepSeek-V3)
    "adaptive_softmax",  # frequency-clustered output distribution (Grave et al. 2017)
    "ngram_memory",  # Kneser-Ney bigram (or trigram) of train.bin mixed with the model's distribution by a learned gate
)
# components that give the model its positional information; with any of them on, no learned wpe
POSITION_COMPONENTS = ("rope", "laplace_bias")  # mla takes its rotary key from rope, else wpe
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
    # rms_qknorm: the epsilon of every RMSNorm; the initial value of the query and key norms' gains (with gains
    # g_q = g_k = g the attention logits are bounded by g^2 sqrt(head_dim) at initialization)
    rms_eps: float = 1e-6
    rms_qknorm_qk_gain: float = 1.0
    # mla: latent width r of keys and values, of queries (0: no query latent), decoupled rotary width
    # (the rotary part exists only with rope: rope is what rotates, mla where; mla alone uses learned positions)
    mla_kv_rank: int = 16
    mla_q_rank: int = 0
    mla_rope_dim: int = 4
    # difference_ssm: the layers whose attention it replaces, and the order m (finite differences per channel)
    difference_ssm_layers: tuple[int, ...] = (0, 2)
    difference_ssm_order: int = 4
    # fixed_point_qat: bits b of the symmetric per-output-channel fixed-point weights
    fixed_point_qat_bits: int = 8
    # tiled_attention: keys (and queries) per block of the online softmax
    tiled_attention_block: int = 16
    # memory_tape: learned key and value slots per head and layer that every query may attend to
    memory_tape_slots: int = 8
    # laplace_bias: initial rates s_h = 2^(-exponent * (h + 1) / n_head), ALiBi's geometric slopes (exponent 8)
    laplace_bias_exponent: float = 8.0
    # laplace_glu: init std of c_gate = scale / sqrt(n_embd), so that the gate's inputs have std ~ scale
    laplace_glu_gate_scale: float = 1.0
    # succession_objective: weight eps of the add-one prior in the targets, z-loss weight alpha on (log Z)^2
    succession_objective_eps: float = 0.1
    succession_objective_zloss: float = 1e-4
    # posterior_mean: EMA decay of the averaged weights (warmup min(decay, (1 + t) / (10 + t)))
    posterior_mean_decay: float = 0.999
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
    # tied tails: a tail cluster scores its ids with their token-embedding rows through a map of its width,
    # E_c U_c P_c h, instead of its own output matrix O_c P_c h (the head is tied in either case)
    adaptive_softmax_tied_tails: bool = False
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

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        unknown = [c for c in self.components if c not in KNOWN_COMPONENTS]
        if unknown:
            raise ConfigError(
                f"unknown component(s) {unknown}; known components: {list(KNOWN_COMPONENTS) or 'none yet'}"
            )
        if not self.rms_qknorm_qk_gain > 0:
            raise ConfigError(f"rms_qknorm_qk_gain={self.rms_qknorm_qk_gain}; expected a positive initial gain")
        if self.rotary_dim % 2 or (self.has("rope") and self.rotary_dim == 0):
            raise ConfigError(f"rope_fraction={self.rope_fraction} gives {self.rotary_dim} rotated dims of {self.head_dim}; expected an even number > 0")
        if self.has("mla") and (self.mla_kv_rank <= 0 or (self.has("rope") and (self.mla_rope_dim % 2 or self.mla_rope_dim <= 0))):
            raise ConfigError(f"mla needs mla_kv_rank > 0, and with rope an even mla_rope_dim > 0; got {self.mla_kv_rank}, {self.mla_rope_dim}")
        if self.has("difference_ssm"):
            layers = self.difference_ssm_layers
            if not isinstance(layers, tuple) or not all(isinstance(i, int) and 0 <= i < self.n_layer for i in layers):
                raise ConfigError(f"difference_ssm_layers={layers!r} must be a tuple of layer indices in [0, {self.n_layer})")
            if not isinstance(self.difference_ssm_order, int) or self.difference_ssm_order < 1:
                raise ConfigError(f"difference_ssm_order={self.difference_ssm_order!r} must be an int >= 1")
        if self.has("fixed_point_qat") and not (isinstance(self.fixed_point_qat_bits, int) and 2 <= self.fixed_point_qat_bits <= 16):
            raise ConfigError(f"fixed_point_qat_bits={self.fixed_point_qat_bits!r} must be an int in [2, 16]")
        if self.has("tiled_attention") and not (isinstance(self.tiled_attention_block, int) and self.tiled_attention_block >= 1):
            raise ConfigError(f"tiled_attention_block={self.tiled_attention_block!r} must be an int >= 1")
        if self.has("memory_tape"):
            if isinstance(self.memory_tape_slots, bool) or not isinstance(self.memory_tape_slots, int) or self.memory_tape_slots < 0:
                raise ConfigError(f"memory_tape_slots={self.memory_tape_slots!r}; expected an int >= 0")
            if self.has("mla"):
                raise ConfigError("memory_tape is not supported together with mla (the latent attention has no tape)")
        if self.has("laplace_bias") and self.has("memory_tape"):
            raise ConfigError("laplace_bias and memory_tape are not supported together (the tape slots have no position to decay from)")
        if self.has("laplace_bias") and self.has("mla"):
            raise ConfigError("laplace_bias acts in the standard attention; it cannot be combined with mla")
        if self.has("laplace_glu") and self.has("golden_swiglu"):
            raise ConfigError("laplace_glu and golden_swiglu both replace the MLP; switch on one of them")
        if not self.laplace_glu_gate_scale > 0:
            raise ConfigError(f"laplace_glu_gate_scale={self.laplace_glu_gate_scale} must be > 0")
        if not self.laplace_bias_exponent > 0:
            raise ConfigError(f"laplace_bias_exponent={self.laplace_bias_exponent} must be > 0")
        if not 0.0 <= self.succession_objective_eps < 1.0:
            raise ConfigError(f"succession_objective_eps={self.succession_objective_eps} must lie in [0, 1)")
        if not self.succession_objective_zloss >= 0.0:
            raise ConfigError(f"succession_objective_zloss={self.succession_objective_zloss} must be >= 0")
        if not 0.0 <= self.posterior_mean_decay < 1.0:
            raise ConfigError(f"posterior_mean_decay={self.posterior_mean_decay} must lie in [0, 1)")
        if self.has("adaptive_softmax") and (self.has("good_turing_prior") or self.has("succession_objective")):
            raise ConfigError("adaptive_softmax replaces the tied output head; good_turing_prior (an output bias) and "
                              "succession_objective (a loss of the tied head) are not supported with it")
        if self.has("moe_mlp") and self.has("fixed_point_qat"):
            raise ConfigError("moe_mlp with fixed_point_qat is not supported (the JAX blocks read through "
                              "nn.map_variables cannot sow the expert loads)")
        if self.has("moe_mlp") and self.has("succession_objective"):
            raise ConfigError("moe_mlp with succession_objective is not supported (the JAX objective does not return "
                              "the expert loads that balance the router)")
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
        if self.has("ngram_memory"):
            from dreamteam.components.ngram_memory import LOW_ORDERS

            if self.has("adaptive_softmax") or self.has("succession_objective"):
                raise ConfigError("ngram_memory mixes with the tied head's softmax and its plain cross-entropy; "
                                  "adaptive_softmax and succession_objective are not supported with it")
            if self.ngram_memory_low not in LOW_ORDERS:
                raise ConfigError(f"ngram_memory_low={self.ngram_memory_low!r}; expected one of {list(LOW_ORDERS)}")
            if self.ngram_memory_order not in (2, 3):
                raise ConfigError(f"ngram_memory_order={self.ngram_memory_order!r}; expected 2 (bigram) or 3 (trigram)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must lie in [0, 1)")

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
    # Muon (used where the model's components include "muon"): the 2-D matrices inside the blocks; its
    # learning rate follows the same schedule, scaled by muon_lr / learning_rate
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_weight_decay: float = 0.0  # decoupled: p <- p (1 - lr_t wd) - lr_t O
    muon_ns_steps: int = 5
    muon_bf16: bool = False  # run the Newton-Schulz iteration in bfloat16 (the fast path of the paper's code)
    # good_turing_prior's output bias (lm_head.bias) learns at this fraction of the scheduled AdamW rate (0 keeps
    # the prior fixed): Adam moves every bias by about the rate per step whatever its gradient's size, so the
    # ids absent from a batch, whose gradients are tiny but always positive, drift down together
    good_turing_prior_lr_ratio: float = 1.0

    def __post_init__(self):
        if self.optimizer not in ("adamw",):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of ['adamw']")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected 'constant' or 'cosine'")
        if not self.muon_lr > 0 or not 0.0 <= self.muon_momentum < 1.0 or self.muon_weight_decay < 0:
            raise ConfigError(f"Muon needs muon_lr > 0, 0 <= muon_momentum < 1, muon_weight_decay >= 0; got "
                              f"{self.muon_lr}, {self.muon_momentum}, {self.muon_weight_decay}")
        if isinstance(self.muon_ns_steps, bool) or not isinstance(self.muon_ns_steps, int) or self.muon_ns_steps < 1:
            raise ConfigError(f"muon_ns_steps={self.muon_ns_steps!r}; expected an int >= 1")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate}; expected > 0")
        if not self.good_turing_prior_lr_ratio >= 0:
            raise ConfigError(f"good_turing_prior_lr_ratio={self.good_turing_prior_lr_ratio}; expected >= 0")

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
