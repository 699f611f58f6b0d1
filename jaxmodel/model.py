"""The GPT of nanoGPT as DreamTeam configures it, as pure-functional Flax Linen modules (the reference).

The parameter tree has the torch port's names and shapes: `Linear` and `Embedding` store `weight` as
(out, in) and (num, features) like torch.nn, and blocks are named `h_0`, `h_1`, ... for torch's
`h.0`, `h.1`, ... The output head is tied to the token embedding, so there is no `lm_head` parameter.

    x_BxTxD = wte[idx_BxT] + wpe[0..T-1]          (wpe only without a position component such as rope)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits_BxTxV = ln_f(x) @ wte^T  (+ lm_head/bias with good_turing_prior)
                                               (adaptive_softmax: log p over the V ids from frequency clusters)
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dreamteam.config import GPTConfig
from jaxmodel.adaptive_softmax import AdaptiveSoftmax
from jaxmodel.golden_swiglu import GoldenSwiGLU
from jaxmodel.difference_ssm import DifferenceSSM
from jaxmodel.fixed_point_qat import fake_quant_block_params
from jaxmodel.good_turing_prior import OutputBias
from jaxmodel.laplace_bias import laplace_bias, rate_init
from jaxmodel.laplace_glu import LaplaceGLU
from jaxmodel.layers import Embedding, LayerNorm, Linear, causal_attention_weights, normal  # noqa: F401 (used by tests)
from jaxmodel.memory_tape import tape_attention, tape_attention_weights
from jaxmodel.mla import MultiHeadLatentAttention
from jaxmodel.moe_mlp import MoEMLP
from jaxmodel.ngram_memory import NgramMemory
from jaxmodel.rms_qknorm import RMSNorm
from jaxmodel.rope import apply_rope
from jaxmodel.tiled_attention import attend


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017) with a fused qkv projection `c_attn`."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True, pos_T=None):
        cfg = self.cfg
        B, T, D = x_BxTxD.shape
        H, K = cfg.n_head, cfg.head_dim
        pos_T = jnp.arange(T) if pos_T is None else pos_T
        qkv_BxTx3D = Linear(3 * D, cfg.bias, name="c_attn")(x_BxTxD)
        q, k, v = (a.reshape(B, T, H, K).transpose(0, 2, 1, 3) for a in jnp.split(qkv_BxTx3D, 3, axis=-1))
        if cfg.has("rms_qknorm"):
            k_norm = RMSNorm(cfg.rms_eps, cfg.rms_qknorm_qk_gain, name="k_norm")
            q, k = RMSNorm(cfg.rms_eps, cfg.rms_qknorm_qk_gain, name="q_norm")(q), k_norm(k)
        if cfg.has("rope"):
            q, k = (apply_rope(a, pos_T, cfg.rotary_dim, cfg.rope_base) for a in (q, k))
        if cfg.has("memory_tape"):  # M key and value slots per head, no position (jaxmodel/memory_tape.py)
            # one softmax over [tape | context]; computed untiled even where tiled_attention is on
            M = cfg.memory_tape_slots
            tape_k_HxMxK = self.param("tape_k", normal(0.02), (H, M, K))
            tape_v_HxMxK = self.param("tape_v", normal(0.02), (H, M, K))
            if cfg.has("rms_qknorm"):
                tape_k_HxMxK = k_norm(tape_k_HxMxK)
            w_BxHxTxS = tape_attention_weights(q, k, tape_k_HxMxK)
            self.sow("intermediates", "attention_weights", w_BxHxTxS[..., M:])  # the context part (anatomy)
            y_BxHxTxK = tape_attention(w_BxHxTxS, v, tape_v_HxMxK)
        else:
            decay_H = bias_HxTxT = None
            if cfg.has("laplace_bias"):
                rate_H = self.param("laplace_rate", rate_init(H, cfg.laplace_bias_exponent), (H,))
                decay_H = jax.nn.softplus(rate_H)
                bias_HxTxT = laplace_bias(decay_H, pos_T)
            y_BxHxTxK = attend(self, cfg, q, k, v, decay_H, bias_HxTxT)  # tiled or naive; sows the weights
        y_BxTxD = y_BxHxTxK.transpose(0, 2, 1, 3).reshape(B, T, D)
        y_BxTxD = Linear(D, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer), name="c_proj")(y_BxTxD)
        return nn.Dropout(cfg.dropout)(y_BxTxD, deterministic=deterministic)


class MLP(nn.Module):
    """c_proj(gelu(c_fc(x))), hidden width 4D, exact GELU x * Phi(x)."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        D = x_BxTxD.shape[-1]
        h_BxTxF = jax.nn.gelu(Linear(4 * D, cfg.bias, name="c_fc")(x_BxTxD), approximate=False)
        y_BxTxD = Linear(D, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer), name="c_proj")(h_BxTxF)
        return nn.Dropout(cfg.dropout)(y_BxTxD, deterministic=deterministic)


def make_norm(cfg: GPTConfig, name: str) -> nn.Module:
    """LayerNorm, or RMSNorm where rms_qknorm is on."""
    return RMSNorm(cfg.rms_eps, name=name) if cfg.has("rms_qknorm") else LayerNorm(cfg.bias, name=name)


def make_mlp(cfg: GPTConfig) -> nn.Module:
    if cfg.has("laplace_glu"):
        return LaplaceGLU(cfg, name="mlp")
    if cfg.has("moe_mlp"):
        return MoEMLP(cfg, name="mlp")
    return GoldenSwiGLU(cfg, name="mlp") if cfg.has("golden_swiglu") else MLP(cfg, name="mlp")


def make_attention(cfg: GPTConfig, layer_index: int = 0) -> nn.Module:
    """The token mixer of block `layer_index`: difference_ssm in its layers, else (latent) attention."""
    if cfg.ssm_layer(layer_index):
        return DifferenceSSM(cfg, name="attn")  # named attn: parameter paths stay h_i/attn/*
    return MultiHeadLatentAttention(cfg, name="attn") if cfg.has("mla") else CausalSelfAttention(cfg, name="attn")


class Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    cfg: GPTConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        x_BxTxD = x_BxTxD + make_attention(cfg, self.layer_index)(make_norm(cfg, "ln_1")(x_BxTxD), deterministic)
        x_BxTxD = x_BxTxD + make_mlp(cfg)(make_norm(cfg, "ln_2")(x_BxTxD), deterministic)
        return x_BxTxD


class Transformer(nn.Module):
    """Embeddings, blocks and the final norm; returns the tied-head logits (adaptive_softmax: the
    log-probabilities over all V ids, or with targets the per-token -log p(target))."""

    cfg: GPTConfig
    token_counts: Any = None

    @nn.compact
    def __call__(self, idx_BxT, deterministic: bool = True, head: bool = True, targets_BxT=None):
        cfg = self.cfg
        T = idx_BxT.shape[1]
        if T > cfg.block_size:
            raise ValueError(f"cannot forward a sequence of length {T}; block_size is {cfg.block_size}")
        wte = Embedding(cfg.vocab_size, cfg.n_embd, name="wte")
        x_BxTxD = wte(idx_BxT)
        if cfg.learned_positions:
            x_BxTxD = x_BxTxD + Embedding(cfg.block_size, cfg.n_embd, name="wpe")(jnp.arange(T))
        x_BxTxD = nn.Dropout(cfg.dropout)(x_BxTxD, deterministic=deterministic)
        self.sow("intermediates", "residual", x_BxTxD)  # the residual stream, for the logit lens
        block = Block
        if cfg.has("fixed_point_qat") and not self.is_initializing():
            # the blocks read their matrices fake-quantized; the stored parameters stay float (init=True:
            # the block creates its parameters, untransformed, on init)
            quantize = lambda tree: fake_quant_block_params(tree, cfg.fixed_point_qat_bits)  # noqa: E731
            block = nn.map_variables(Block, "params", trans_in_fn=quantize, init=True)
        for i in range(cfg.n_layer):
            x_BxTxD = block(cfg, i, name=f"h_{i}")(x_BxTxD, deterministic)
            self.sow("intermediates", "residual", x_BxTxD)
        h_BxTxD = make_norm(cfg, "ln_f")(x_BxTxD)
        if not head:
            return h_BxTxD
        if cfg.has("adaptive_softmax"):
            asm = AdaptiveSoftmax(cfg, self.token_counts, name="adaptive_softmax")
            B, T, D = h_BxTxD.shape
            t_N = None if targets_BxT is None else targets_BxT.reshape(-1)
            out = asm(h_BxTxD.reshape(-1, D), wte.weight, t_N)
            return out.reshape(B, T, -1) if t_N is None else out.reshape(B, T)
        return wte.attend(h_BxTxD)


class GPT(nn.Module):
    """idx_BxT -> logits_BxTxV (head=False: the final hidden states ln_f(x)_BxTxD).
    Parameters live under `transformer`, as in the torch port.

    token_counts: how often each id occurs in train.bin (dreamteam.data.token_counts), for components
    built from token frequencies; None where no such component is on."""

    cfg: GPTConfig
    token_counts: Any = None
    ngram_stats: Any = None  # the bigram counts of train.bin, for ngram_memory (dreamteam.components.ngram_memory)

    @nn.compact
    def __call__(self, idx_BxT, deterministic: bool = True, head: bool = True, targets_BxT=None):
        """targets_BxT: only with adaptive_softmax, for its per-token -log p(target) (B, T) without the
        B x T x V log-probabilities (jaxmodel/fast.py)."""
        transformer = Transformer(self.cfg, self.token_counts, name="transformer")
        mixture = head and self.cfg.has("ngram_memory")  # slot: head_mixture (its gate reads the hidden states)
        out = transformer(idx_BxT, deterministic, head and not mixture, targets_BxT)
        if mixture:  # slot: head_mixture: the tied head's logits of the hidden states
            h_BxTxD, out = out, jnp.einsum("...d,vd->...v", out, transformer.variables["params"]["wte"]["weight"])
        if head and self.cfg.has("good_turing_prior"):  # the trained output bias lm_head/bias
            out = OutputBias(self.token_counts, name="lm_head")(out)
        if mixture:  # slot: head_mixture: log p_mix over the V ids
            out = NgramMemory(self.cfg, self.ngram_stats, name="ngram_memory")(h_BxTxD, idx_BxT, out)
        return out


# the variable collections of a model: its parameters, and non-gradient state updated outside the
# optimizer (moe_mlp's balancing bias); the optimizer sees both, the buffers' gradients are exactly 0
COLLECTIONS = ("params", "buffers")


def init_params(cfg: GPTConfig, key, dtype=jnp.float32, token_counts=None):
    """Fresh variables {'params': ..., ['buffers': ...]} for cfg, floats cast to dtype (token_counts: see GPT)."""
    # jitted: one compilation instead of one per primitive, the bulk of an eager init's time at small shapes
    variables = jax.jit(GPT(cfg, token_counts).init)(key, jnp.zeros((1, cfg.block_size), jnp.int32))
    variables = {c: variables[c] for c in COLLECTIONS if c in variables}
    variables = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, variables)
    if cfg.has("good_turing_prior"):  # log p_GT rounded once, from float64, in dtype (not via float32)
        from dreamteam.good_turing import log_prior

        variables["params"]["lm_head"]["bias"] = jnp.asarray(log_prior(token_counts), dtype)
    return variables


def apply_with_loads(params, cfg: GPTConfig, idx_BxT, token_counts=None, ngram_stats=None, **kwargs):
    """(GPT(cfg).apply(params, idx, **kwargs), moe_load): the expert loads moe_mlp sowed ({} without it)."""
    if not cfg.has("moe_mlp"):  # nothing sows loads; a plain apply (map_variables scopes need no mutable state)
        return GPT(cfg, token_counts, ngram_stats).apply(params, idx_BxT, **kwargs), {}
    out, state = GPT(cfg, token_counts, ngram_stats).apply(params, idx_BxT, mutable=["moe_load"], **kwargs)
    return out, state.get("moe_load", {})


def cross_entropy(logits_BxTxV, targets_BxT):
    """Mean over tokens of -log softmax(logits)[target]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT).mean()


def loss_fn(params, cfg: GPTConfig, idx_BxT, targets_BxT, token_counts=None, with_loads: bool = False,
            ngram_stats=None):
    """The training loss: mean cross-entropy of the next token ((loss, moe_load) with with_loads)."""
    logits_BxTxV, loads = apply_with_loads(params, cfg, idx_BxT, token_counts, ngram_stats)
    # logits are the normalized log-probabilities: -log p(target) (slot: head_mixture, ngram_memory's too)
    if cfg.has("adaptive_softmax") or cfg.has("ngram_memory"):
        loss = -jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1).mean()
    else:
        loss = cross_entropy(logits_BxTxV, targets_BxT)
    return (loss, loads) if with_loads else loss
