"""Layers shared by every component: Linear and Embedding with torch.nn's parameter layout, LayerNorm, and the
attention's default `attend` (the naive softmax)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmodel.memory_tape import tape_attention, tape_attention_weights


def normal(std: float):
    return nn.initializers.normal(stddev=std)


class Linear(nn.Module):
    """y = x W^T (+ b), W of shape (out, in) as torch.nn.Linear stores it."""

    features: int
    use_bias: bool = False
    std: float = 0.02

    @nn.compact
    def __call__(self, x_NxI):
        w_OxI = self.param("weight", normal(self.std), (self.features, x_NxI.shape[-1]))
        y_NxO = jnp.einsum("...i,oi->...o", x_NxI, w_OxI)
        if self.use_bias:
            y_NxO = y_NxO + self.param("bias", nn.initializers.zeros, (self.features,))
        return y_NxO


class Embedding(nn.Module):
    """A lookup table W of shape (num, features), normal(0, 0.02); `attend` is x W^T (the tied head)."""

    num: int
    features: int

    def setup(self):
        self.weight = self.param("weight", normal(0.02), (self.num, self.features))

    def __call__(self, idx):
        return jnp.take(self.weight, idx, axis=0)

    def attend(self, x_NxD):
        return jnp.einsum("...d,vd->...v", x_NxD, self.weight)


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + 1e-5) * weight (+ bias), over the last axis (biased variance)."""

    use_bias: bool = False
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x_NxD):
        d = x_NxD.shape[-1]
        mean = x_NxD.mean(-1, keepdims=True)
        var = jnp.square(x_NxD - mean).mean(-1, keepdims=True)
        y = (x_NxD - mean) * jax.lax.rsqrt(var + self.eps) * self.param("weight", nn.initializers.ones, (d,))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (d,))
        return y


def causal_attention_weights(q_BxHxTxE, k_BxHxTxE, bias_HxTxT=None):
    """softmax over keys j <= i of q_i . k_j / sqrt(E) (+ bias[h, i, j], e.g. laplace_bias): each row a
    distribution on the past."""
    T, E = q_BxHxTxE.shape[-2:]
    s_BxHxTxT = jnp.einsum("bhqe,bhse->bhqs", q_BxHxTxE, k_BxHxTxE) / math.sqrt(E)
    if bias_HxTxT is not None:
        s_BxHxTxT = s_BxHxTxT + bias_HxTxT
    s_BxHxTxT = jnp.where(jnp.tril(jnp.ones((T, T), dtype=bool)), s_BxHxTxT, -jnp.inf)
    return jax.nn.softmax(s_BxHxTxT, axis=-1)


class Attend(nn.Module):
    """The attend slot's default: y = softmax(q k^T / sqrt(E) + bias) v over the causal context, the T x T
    weights formed whole. bias: the score_bias slot's bias(qpos, kpos) or None; extra_kv: the extra_kv slot's
    (k_HxMxE, v_HxMxF) or None, read by every query through one softmax over [extra | context].
    The weights are sown into `intermediates` (the context part), kept only when apply asks for it (anatomy)."""

    def __call__(self, q_BxHxTxE, k_BxHxTxE, v_BxHxTxF, bias=None, extra_kv=None, pos_T=None):
        if extra_kv is not None:
            extra_k_HxMxE, extra_v_HxMxF = extra_kv
            w_BxHxTxS = tape_attention_weights(q_BxHxTxE, k_BxHxTxE, extra_k_HxMxE)
            self.sow("intermediates", "attention_weights", w_BxHxTxS[..., extra_k_HxMxE.shape[1]:])
            return tape_attention(w_BxHxTxS, v_BxHxTxF, extra_v_HxMxF)
        w_BxHxTxT = causal_attention_weights(q_BxHxTxE, k_BxHxTxE, None if bias is None else bias(pos_T, pos_T))
        self.sow("intermediates", "attention_weights", w_BxHxTxT)
        return jnp.einsum("bhqs,bhsf->bhqf", w_BxHxTxT, v_BxHxTxF)
