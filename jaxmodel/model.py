"""The GPT of nanoGPT as DreamTeam configures it, as pure-functional Flax Linen modules (the reference),
assembled by slot: the config names the component that fills each slot (dreamteam/components,
`cfg.filler(slot)`, None for the model's default), and that component's Flax module, jaxmodel/<name>.py, lists
what the model builds there in its FILLS ({slot: constructor}; `filler` below).

    E_VxD = wte                                      token_embedding: byte_ngram_embedding's wte + pooled n-grams
    x_BxTxD = E[idx_BxT] (+ wpe[0..T-1])             wpe only without a position component (rope, laplace_bias)
    for each block h_l:
        x = x + attn(ln_1(x))                        token_mixer: difference_ssm in its layers, else attention:
            q, k, v = qkv(x)                             c_attn, or mla's latent projections
            q, k = transform(q, k) for each              qk_transform: rms_qknorm's q_norm/k_norm, then rope
            y = attend(q, k, v, bias, extra_kv)          softmax(q k^T / sqrt(E) + bias) v over the causal context;
                                                         score_bias: laplace_bias; extra_kv: memory_tape's slots;
                                                         attend: naive, or tiled_attention's online softmax
            attn = c_proj(y)
        x = x + mlp(ln_2(x))                         mlp: 4x GELU, golden_swiglu, laplace_glu or moe_mlp
    h_BxTxD = ln_f(x)                                norm: LayerNorm, or rms_qknorm's RMSNorm
    logits_BxTxV = head(h, E)                        head: tied, h E^T (+ output_bias: good_turing_prior's
                                                     lm_head/bias); or adaptive_softmax's log p; the head's
                                                     `loss` is the training loss
    logits_BxTxV = mixture(h, idx, logits)           head_mixture: ngram_memory's log p_mix (a gate of h mixes
                                                     in the n-gram distribution of the previous tokens); its
                                                     `loss` -log p_mix(target) is then the training loss

The parameter tree has the torch port's names and shapes: `Linear` and `Embedding` store `weight` as
(out, in) and (num, features) like torch.nn, blocks are named `h_0`, `h_1`, ... for torch's `h.0`, `h.1`, ...
A slot's module creates its parameters in the scope of the module it serves (`shared`, flax's share_scope):
c_attn, q_norm, tape_k or laplace_rate are all h_l/attn/*, as in the torch port. Flax draws a parameter's
initial value from its path and its rank among its scope's draws, so the paths and that order are fixed.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dreamteam.config import GPTConfig
from jaxmodel.layers import Attend, Embedding, LayerNorm, Linear, causal_attention_weights, normal  # noqa: F401 (tests)


def fills(component: str) -> dict:
    """{slot: constructor} of a component: the FILLS of its Flax module, jaxmodel/<component>.py, imported when
    a model is built (so that a component's module may build on this one)."""
    return importlib.import_module(f"jaxmodel.{component}").FILLS


def filler(cfg: GPTConfig, slot: str, default=None):
    """What fills the exclusive `slot` of cfg's model: `default` (the model's own; None: nothing), or what the
    component that fills it lists for the slot. A constructor takes cfg (a qk transform also the qkv module,
    whose rotary width it rotates)."""
    component = cfg.filler(slot)
    return default if component is None else fills(component)[slot]


def shared(parent: nn.Module, child: nn.Module) -> nn.Module:
    """child, creating its parameters (and sowing) in parent's scope: a slot's module adds no level to the paths."""
    nn.share_scope(parent, child)
    return child


class FusedQKV(nn.Module):
    """The qkv slot's default: q, k, v (B, H, T, K) from one projection c_attn (D -> 3D)."""

    cfg: GPTConfig
    DROPOUT = "Dropout_0"  # the name the attention's dropout has beside c_attn (its masks' keys come from it)

    @property
    def rotary_dim(self) -> int:
        return self.cfg.rotary_dim

    @nn.compact
    def __call__(self, x_BxTxD):
        B, T, D = x_BxTxD.shape
        H, K = self.cfg.n_head, self.cfg.head_dim
        qkv_BxTx3D = Linear(3 * D, self.cfg.bias, name="c_attn")(x_BxTxD)
        return tuple(a.reshape(B, T, H, K).transpose(0, 2, 1, 3) for a in jnp.split(qkv_BxTx3D, 3, axis=-1))


def plain_attend(cfg: GPTConfig) -> Attend:
    """The attend slot's default: softmax(q k^T / sqrt(E) + bias) v, naive."""
    return Attend()


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017): qkv, the qk transforms, one attend, c_proj.
    pos_T: the tokens' positions (default 0..T-1), for the transforms and the score bias."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True, pos_T=None):
        cfg = self.cfg
        B, T, D = x_BxTxD.shape
        pos_T = jnp.arange(T) if pos_T is None else pos_T
        qkv = shared(self, filler(cfg, "qkv", FusedQKV)(cfg))
        q_BxHxTxE, k_BxHxTxE, v_BxHxTxK = qkv(x_BxTxD)
        # the qk transforms in declaration order: normalize, then rotate
        transforms = [shared(self, fills(name)["qk_transform"](cfg, qkv)) for name in cfg.fillers("qk_transform")]
        for transform in transforms:
            q_BxHxTxE, k_BxHxTxE = transform(q_BxHxTxE, k_BxHxTxE, pos_T)
        bias = extra_kv = None
        if score_bias := filler(cfg, "score_bias"):
            bias = shared(self, score_bias(cfg))()  # bias(qpos, kpos) -> (H, ...Q, K)
        if extra := filler(cfg, "extra_kv"):
            extra_k_HxMxE, extra_v_HxMxK = shared(self, extra(cfg))()
            for transform in transforms:  # the extra keys have no position: normalized, never rotated
                extra_k_HxMxE = transform.extra_keys(extra_k_HxMxE)
            extra_kv = (extra_k_HxMxE, extra_v_HxMxK)
        attend = shared(self, filler(cfg, "attend", plain_attend)(cfg))  # sows the weights for anatomy
        y_BxHxTxK = attend(q_BxHxTxE, k_BxHxTxE, v_BxHxTxK, bias, extra_kv, pos_T)
        y_BxTxD = y_BxHxTxK.transpose(0, 2, 1, 3).reshape(B, T, D)
        y_BxTxD = Linear(D, cfg.bias, std=0.02 / math.sqrt(2 * cfg.n_layer), name="c_proj")(y_BxTxD)
        return nn.Dropout(cfg.dropout, name=qkv.DROPOUT)(y_BxTxD, deterministic=deterministic)


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


def layer_norm(cfg: GPTConfig, name: str | None = None) -> LayerNorm:
    """The norm slot's default."""
    return LayerNorm(cfg.bias, name=name)


def make_norm(cfg: GPTConfig, name: str | None = None) -> nn.Module:
    return filler(cfg, "norm", layer_norm)(cfg, name)


class Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    cfg: GPTConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x_BxTxD, deterministic: bool = True):
        cfg = self.cfg
        # the token_mixer slot's filler mixes only in its layers (difference_ssm_layers), attention elsewhere
        mixer = filler(cfg, "token_mixer") if cfg.ssm_layer(self.layer_index) else CausalSelfAttention
        x_BxTxD = x_BxTxD + mixer(cfg, name="attn")(make_norm(cfg, "ln_1")(x_BxTxD), deterministic)
        x_BxTxD = x_BxTxD + filler(cfg, "mlp", MLP)(cfg, name="mlp")(make_norm(cfg, "ln_2")(x_BxTxD), deterministic)
        return x_BxTxD


class Transformer(nn.Module):
    """The trunk: idx_BxT -> ln_f(x)_BxTxD, through the embeddings and the blocks. Sows the residual stream
    after the embeddings and after every block into `intermediates` (anatomy's logit lens)."""

    cfg: GPTConfig

    def setup(self):
        cfg = self.cfg
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.filler("token_embedding") is not None:  # e.g. byte_ngram, composing E from wte
            name, module = filler(cfg, "token_embedding")  # (its name in the trunk, the module)
            setattr(self, name, module(cfg))
        self.wpe = Embedding(cfg.block_size, cfg.n_embd) if cfg.learned_positions else None
        self.drop = nn.Dropout(cfg.dropout, name="Dropout_0")  # the name its masks' keys come from
        # a transform of every block's parameters as the forward pass reads them (the stored ones stay float)
        block, weights = Block, filler(cfg, "block_weights")
        if weights is not None and not self.is_initializing():
            # init=True: on init the blocks create their parameters untransformed
            block = nn.map_variables(Block, "params", trans_in_fn=weights(cfg), init=True)
        self.h = [block(cfg, i) for i in range(cfg.n_layer)]
        self.ln_f = make_norm(cfg)

    def embedding_matrix(self):
        """E_VxD: the rows ids are embedded with and the tied head scores with; wte's, or the token_embedding
        slot's composition of them (byte_ngram_embedding: wte plus the pooled byte n-gram vectors)."""
        if self.cfg.filler("token_embedding") is None:
            return self.wte.weight
        return getattr(self, filler(self.cfg, "token_embedding")[0])(self.wte.weight)

    def __call__(self, idx_BxT, deterministic: bool = True, E_VxD=None):
        """E_VxD: embedding_matrix(), where the caller has it already (the head reads it too)."""
        T = idx_BxT.shape[1]
        if T > self.cfg.block_size:
            raise ValueError(f"cannot forward a sequence of length {T}; block_size is {self.cfg.block_size}")
        if self.cfg.filler("token_embedding") is None:
            x_BxTxD = self.wte(idx_BxT)
        else:
            x_BxTxD = jnp.take(self.embedding_matrix() if E_VxD is None else E_VxD, idx_BxT, axis=0)
        if self.wpe is not None:
            x_BxTxD = x_BxTxD + self.wpe(jnp.arange(T))
        x_BxTxD = self.drop(x_BxTxD, deterministic=deterministic)
        self.sow("intermediates", "residual", x_BxTxD)
        for block in self.h:
            x_BxTxD = block(x_BxTxD, deterministic)
            self.sow("intermediates", "residual", x_BxTxD)
        return self.ln_f(x_BxTxD)


def cross_entropy(logits_BxTxV, targets_BxT):
    """Mean over tokens of -log softmax(logits)[target]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT).mean()


class TiedHead(nn.Module):
    """The head slot's default: logits = h wte^T (+ b, the output_bias slot's lm_head/bias); loss: their mean
    cross-entropy. Its parameters live at the model's top (lm_head/bias, torch's lm_head.bias)."""

    cfg: GPTConfig
    token_counts: Any = None
    dtype: Any = jnp.float32  # init_params' dtype, for the output bias's initial rounding
    IN_TRUNK = False

    def setup(self):
        bias = filler(self.cfg, "output_bias")
        self.lm_head = None if bias is None else bias(self.cfg, self.token_counts, self.dtype)

    def __call__(self, h_BxTxD, wte_VxD):
        logits_BxTxV = jnp.einsum("...d,vd->...v", h_BxTxD, wte_VxD)
        return logits_BxTxV if self.lm_head is None else self.lm_head(logits_BxTxV)

    def loss(self, h_BxTxD, wte_VxD, targets_BxT, fused=None):
        """fused: jaxmodel/fast.py's chunked loss (h_NxD, w_VxD, b_V or None, t_N) -> loss, which never forms
        the N x V logits; None: the cross-entropy of the full logits."""
        if fused is None:
            return cross_entropy(self(h_BxTxD, wte_VxD), targets_BxT)
        b_V = None if self.lm_head is None else self.lm_head.bias
        return fused(h_BxTxD.reshape(-1, h_BxTxD.shape[-1]), wte_VxD, b_V, targets_BxT.reshape(-1))


class GPT(nn.Module):
    """idx_BxT -> logits_BxTxV (adaptive_softmax: log p; head=False: the final hidden states ln_f(x)_BxTxD).
    Parameters live under `transformer`, as in the torch port; the head's where its IN_TRUNK says.

    token_counts: how often each id occurs in train.bin (dreamteam.data.token_counts), for components
    built from token frequencies; None where no such component is on.
    param_dtype: the dtype init_params casts the parameters to (a module that computes its initial values in
    float64, good_turing_prior's bias, rounds them once into it)."""

    cfg: GPTConfig
    token_counts: Any = None
    param_dtype: Any = jnp.float32
    ngram_stats: Any = None  # the bigram counts of train.bin, for ngram_memory (dreamteam.components.ngram_memory)

    def setup(self):
        self.transformer = Transformer(self.cfg)
        self.head = filler(self.cfg, "head", TiedHead)(self.cfg, self.token_counts, self.param_dtype)
        nn.share_scope(self.head, self.transformer if self.head.IN_TRUNK else self)
        # head_mixture: (cfg, ngram_stats) -> a module mixing a second distribution into the head's (e.g.
        # ngram_memory, its parameters under its name; needs the tied head)
        if (mixture := self.cfg.filler("head_mixture")) is not None:
            setattr(self, mixture, fills(mixture)["head_mixture"](self.cfg, self.ngram_stats))

    def head_mixture(self):
        """The head_mixture slot's module (log p_mix from the head's logits), or None."""
        mixture = self.cfg.filler("head_mixture")
        return None if mixture is None else getattr(self, mixture)

    def embedding_matrix(self):
        """E_VxD, the rows the tied head scores with (Transformer.embedding_matrix): GPT(cfg).apply(params,
        method=GPT.embedding_matrix)."""
        return self.transformer.embedding_matrix()

    def __call__(self, idx_BxT, deterministic: bool = True, head: bool = True):
        E_VxD = self.transformer.embedding_matrix()  # one E for the input and the tied head
        h_BxTxD = self.transformer(idx_BxT, deterministic, E_VxD)
        if not head:
            return h_BxTxD
        logits_BxTxV = self.head(h_BxTxD, E_VxD)
        # head_mixture: log p_mix over the V ids, mixed from the head's logits
        mixture = self.head_mixture()
        return logits_BxTxV if mixture is None else mixture(h_BxTxD, idx_BxT, logits_BxTxV)

    def loss(self, idx_BxT, targets_BxT, deterministic: bool = True, fused=None, chunk=None, held_out: bool = False):
        """The head's mean next-token loss (fused: see TiedHead.loss); with a head_mixture its -log p_mix(target)
        (fused: its own chunked loss through the tied head's operands, `chunk` rows at a time). held_out: the
        training loss of a targets drawn from train.bin, which ngram_memory scores with each target's own
        occurrence left out of its counts (no effect without a head_mixture)."""
        E_VxD = self.transformer.embedding_matrix()
        h_BxTxD = self.transformer(idx_BxT, deterministic, E_VxD)
        mixture = self.head_mixture()
        if mixture is None:
            return self.head.loss(h_BxTxD, E_VxD, targets_BxT, fused)
        return mixture.loss(self.head, h_BxTxD, E_VxD, idx_BxT, targets_BxT, chunk if fused is not None else None,
                            held_out)


# the variable collections of a model: its parameters, and non-gradient state updated outside the
# optimizer (moe_mlp's balancing bias); the optimizer sees both, the buffers' gradients are exactly 0
COLLECTIONS = ("params", "buffers")


def init_params(cfg: GPTConfig, key, dtype=jnp.float32, token_counts=None):
    """Fresh variables {'params': ..., ['buffers': ...]} for cfg, floats cast to dtype (token_counts: see GPT)."""
    # jitted: one compilation instead of one per primitive, the bulk of an eager init's time at small shapes
    variables = jax.jit(GPT(cfg, token_counts, dtype).init)(key, jnp.zeros((1, cfg.block_size), jnp.int32))
    variables = {c: variables[c] for c in COLLECTIONS if c in variables}
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, variables)


def after_step_hooks(cfg: GPTConfig) -> list:
    """The after-step updates of cfg's components, in declaration order: hook(variables, sown) -> variables, with
    sown what the forward sowed into the collection named after each component (apply_with_loads; moe_mlp: its
    expert loads, from which it moves its balancing bias)."""
    hooks = [(component, fills(component)["after_step"](cfg)) for component in cfg.fillers("after_step")]
    return [lambda variables, sown, c=c, hook=hook: hook(variables, sown.get(c, {})) for c, hook in hooks]


def apply_with_loads(params, cfg: GPTConfig, idx_BxT, token_counts=None, ngram_stats=None, **kwargs):
    """(GPT(cfg).apply(params, idx, **kwargs), sown): what the after_step components sowed in the forward, each
    into the collection named after it ({} without them; moe_mlp's expert loads), the input of their hooks
    (after_step_hooks)."""
    sowing = list(cfg.fillers("after_step"))
    if not sowing:  # nothing sows; a plain apply (map_variables scopes need no mutable state)
        return GPT(cfg, token_counts, ngram_stats=ngram_stats).apply(params, idx_BxT, **kwargs), {}
    return GPT(cfg, token_counts, ngram_stats=ngram_stats).apply(params, idx_BxT, mutable=sowing, **kwargs)


def loss_fn(params, cfg: GPTConfig, idx_BxT, targets_BxT, token_counts=None, with_loads: bool = False,
            ngram_stats=None, held_out: bool = False):
    """The head's mean next-token loss ((loss, sown) with with_loads: apply_with_loads); held_out: the training loss
    (GPT.loss)."""
    loss, loads = apply_with_loads(params, cfg, idx_BxT, token_counts, ngram_stats, targets_BxT=targets_BxT,
                                   held_out=held_out, method=GPT.loss)
    return (loss, loads) if with_loads else loss
