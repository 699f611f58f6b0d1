"""ngram_memory: an interpolated Kneser-Ney bigram of train.bin mixed with the model's distribution by a learned gate
per position (Good 1953; Kneser & Ney 1995; Chen & Goodman 1998). The mathematics and the tables are framework-
neutral, in dreamteam/components/ngram_memory.py:

    g = sigmoid(h . w_g + b_g),    p_mix(w) = g softmax(z)_w + (1 - g) p(w | v),    v = the position's input token
    log p_mix(t) = logaddexp(log g + z_t - lse(z), log(1 - g) + log p(t | v))

`NgramMemory` (the module, parameters gate/weight (1, D) and gate/bias (1,)) gives the mixture's log-probabilities
over all V ids (the model's logits). `fused_loss` is the fast training loss: only the target's n-gram probability
(one searchsorted lookup on uint32 keys v V + w, which fit 32 bits without x64), and the tied head's cross-entropy
chunk by chunk in a `lax.scan` (as jaxmodel/fast.py), each token's gradient scaled by the model's responsibility
r = g p_model(t) / p_mix(t): d loss / dz = r (P - Y), d loss / d(h . w_g + b_g) = g - r; a custom_vjp hands the
gradients formed in the forward pass to the backward pass.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dreamteam.components.ngram_memory import kneser_ney, kneser_ney_trigram, padded_entries
from dreamteam.config import GPTConfig
from jaxmodel.layers import normal


def _tables(t, dtype):
    """A Tables (dreamteam/components/ngram_memory.py) as arrays of `dtype` (rounded once from float64); keys uint32."""
    cols, mass = padded_entries(t)
    return dict(V=t.vocab_size, keys=jnp.asarray(t.keys.astype(np.uint32)), mass=jnp.asarray(t.mass, dtype),
                alpha=jnp.asarray(t.alpha, dtype), p_low=jnp.asarray(t.p_low, dtype),
                row_ptr=jnp.asarray(t.row_ptr.astype(np.int32)), cols=jnp.asarray(cols.astype(np.int32)),
                padded_mass=jnp.asarray(mass, dtype), j=jnp.arange(max(t.max_row, 1), dtype=jnp.int32),
                counts=jnp.asarray(t.counts, dtype), C=jnp.asarray(t.context_count, dtype),
                N=jnp.asarray(t.context_types, dtype), d=t.discount)


def tables_of(cfg: GPTConfig, ngram_stats, dtype):
    """The Kneser-Ney tables of the config's order as arrays of the model's dtype."""
    if ngram_stats is None:
        raise ValueError("ngram_memory needs the bigram counts of train.bin: GPT(cfg, token_counts, ngram_stats="
                         "dreamteam.components.ngram_memory.bigram_stats(train_ids, vocab_size))")
    if ngram_stats.vocab_size != cfg.vocab_size:
        raise ValueError(f"ngram_stats counts a vocabulary of {ngram_stats.vocab_size}; the model's is {cfg.vocab_size}")
    if cfg.ngram_memory_order == 2:
        return dict(order=2, bigram=_tables(kneser_ney(ngram_stats, cfg.ngram_memory_low), dtype))
    t = kneser_ney_trigram(ngram_stats, cfg.ngram_memory_low)
    pad = max(t.max_row, 1)
    return dict(order=3, V=t.vocab_size, bigram=_tables(t.bigram, dtype), middle=_tables(t.middle, dtype),
                ctx_keys=jnp.asarray(t.ctx_keys.astype(np.uint32)), alpha=jnp.asarray(t.alpha, dtype),
                row_ptr=jnp.asarray(t.row_ptr.astype(np.int32)),
                cols=jnp.asarray(np.concatenate([t.cols, np.zeros(pad, np.int64)]).astype(np.int32)),
                padded_mass=jnp.asarray(np.concatenate([t.mass, np.zeros(pad)]), dtype),
                padded_counts=jnp.asarray(np.concatenate([t.counts, np.zeros(pad)]), dtype),
                C=jnp.asarray(t.context_count, dtype), N=jnp.asarray(t.context_types, dtype), d=t.discount,
                j=jnp.arange(pad, dtype=jnp.int32), steps=int(t.max_row).bit_length())


def _lookup(T, v_N, t_N):
    """p(t | v) per token by one binary search in the sorted uint32 keys v V + w."""
    key_N = v_N.astype(jnp.uint32) * np.uint32(T["V"]) + t_N.astype(jnp.uint32)
    k_N = jnp.minimum(jnp.searchsorted(T["keys"], key_N), T["keys"].shape[0] - 1)
    stored_N = jnp.where(T["keys"][k_N] == key_N, T["mass"][k_N], 0.0)
    return stored_N + T["alpha"][v_N] * T["p_low"][t_N]


def _scatter(out_NxV, row_ptr, cols, mass, j_K, r_N, keep_N=None):
    """out[n, w] += the entries of row r_n (padded gather, padding masked to mass 0; nothing where keep_N is False)."""
    start_N = row_ptr[r_N]
    idx_NxK = start_N[:, None] + j_K[None, :]
    valid_NxK = j_K[None, :] < (row_ptr[r_N + 1] - start_N)[:, None]
    if keep_N is not None:
        valid_NxK = valid_NxK & keep_N[:, None]
    n_NxK = jnp.broadcast_to(jnp.arange(r_N.shape[0])[:, None], idx_NxK.shape)
    return out_NxV.at[n_NxK, cols[idx_NxK]].add(jnp.where(valid_NxK, mass[idx_NxK], 0.0))


def _rows(T, v_N):
    return _scatter(T["alpha"][v_N][:, None] * T["p_low"][None, :], T["row_ptr"], T["cols"], T["padded_mass"], T["j"], v_N)


# The held-out estimate of a training position (dreamteam/components/ngram_memory.py, "held-out estimate"): the
# counts without the occurrence being predicted, where they hold it (k >= 1).

def _held_out(k_N, C_N, N_N, d, q_N):
    """(max(k - 1 - d, 0) + d (N - [k = 1]) q) / (C - 1), q where C = 1."""
    held_N = (jnp.maximum(k_N - 1 - d, 0.0) + d * (N_N - (k_N == 1)) * q_N) / jnp.maximum(C_N - 1, 1.0)
    return jnp.where(C_N > 1, held_N, q_N)


def _held_out_rows(S_NxV, t_N, k_N, C_N, N_N, d, q_NxV):
    """The held-out rows (S C - delta [w = t] + d (N - [k = 1]) q) / (C - 1), q where C = 1; delta = 1 where
    k >= 2, 1 - d where k = 1."""
    C1_N = jnp.maximum(C_N - 1, 1.0)
    out_NxV = (S_NxV * C_N[:, None] + (d * (N_N - (k_N == 1)))[:, None] * q_NxV) / C1_N[:, None]
    delta_N = jnp.where(k_N >= 2, 1.0, 1.0 - d).astype(q_NxV.dtype)
    out_NxV = out_NxV.at[jnp.arange(t_N.shape[0]), t_N].add(-delta_N / C1_N)
    return jnp.where((C_N > 1)[:, None], out_NxV, q_NxV)


def _count(T, v_N, t_N):
    """c(v, t) per token (0 where the bigram was never seen)."""
    key_N = v_N.astype(jnp.uint32) * np.uint32(T["V"]) + t_N.astype(jnp.uint32)
    k_N = jnp.minimum(jnp.searchsorted(T["keys"], key_N), T["keys"].shape[0] - 1)
    return jnp.where(T["keys"][k_N] == key_N, T["counts"][k_N], 0.0)


def _lookup_held_out(T, v_N, t_N):
    """p(t | v) with the occurrence (v, t) left out where the counts hold it."""
    k_N = _count(T, v_N, t_N)
    held_N = _held_out(jnp.maximum(k_N, 1), T["C"][v_N], T["N"][v_N], T["d"], T["p_low"][t_N])
    return jnp.where(k_N >= 1, held_N, _lookup(T, v_N, t_N))


def _rows_held_out(T, v_N, t_N):
    """The rows p(. | v) with the occurrence (v, t) left out where the counts hold it, (N, V)."""
    k_N = _count(T, v_N, t_N)
    q_NxV = jnp.broadcast_to(T["p_low"][None, :], (v_N.shape[0], T["p_low"].shape[0]))
    S_NxV = _scatter(jnp.zeros_like(q_NxV), T["row_ptr"], T["cols"], T["padded_mass"], T["j"], v_N)
    held_NxV = _held_out_rows(S_NxV, t_N, jnp.maximum(k_N, 1), T["C"][v_N], T["N"][v_N], T["d"], q_NxV)
    return jnp.where((k_N >= 1)[:, None], held_NxV, _rows(T, v_N))


def _context(T, u_N, v_N):
    """(c, seen): the trigram context index of (u, v) and whether it was seen (u = -1: no second token)."""
    key_N = jnp.where(u_N >= 0, u_N, 0).astype(jnp.uint32) * np.uint32(T["V"]) + v_N.astype(jnp.uint32)
    c_N = jnp.minimum(jnp.searchsorted(T["ctx_keys"], key_N), T["ctx_keys"].shape[0] - 1)
    return c_N, (u_N >= 0) & (T["ctx_keys"][c_N] == key_N)


def _entry3(T, c_N, t_N):
    """(k, found): the index of target t in context c's sorted row cols[row_ptr[c] : row_ptr[c + 1]] by
    bisection (steps = the bit length of the longest row), and whether it is there."""
    lo_N, hi_N = T["row_ptr"][c_N], T["row_ptr"][c_N + 1]
    end_N = hi_N
    for _ in range(T["steps"]):  # lower bound of t in cols[lo:hi]
        mid_N = (lo_N + hi_N) // 2
        active_N, right_N = lo_N < hi_N, T["cols"][mid_N] < t_N
        lo_N = jnp.where(active_N & right_N, mid_N + 1, lo_N)
        hi_N = jnp.where(active_N & ~right_N, mid_N, hi_N)
    return lo_N, (lo_N < end_N) & (T["cols"][lo_N] == t_N)


def prob(T, u_N, v_N, t_N, held_out: bool = False):
    """p(t | u, v) per token (the bigram: p(t | v)); u = -1 where there is no second token of context. The trigram's
    entry c V + w can pass 2^32, so it is found by bisection of w within context c's sorted row (uint32-free).
    held_out: each occurrence (u, v, t) left out of the counts where they hold it (training positions)."""
    bigram = _lookup_held_out if held_out else _lookup
    if T["order"] == 2:
        return bigram(T["bigram"], v_N, t_N)
    c_N, seen_N = _context(T, u_N, v_N)
    lo_N, found_N = _entry3(T, c_N, t_N)
    stored_N = jnp.where(found_N, T["padded_mass"][lo_N], 0.0)
    p_mid_N = _lookup(T["middle"], v_N, t_N)
    p3_N = jnp.where(seen_N, stored_N + T["alpha"][c_N] * p_mid_N, p_mid_N)
    if held_out:  # the middle order loses the occurrence where it was its trigram's only one (k3 = 1)
        k3_N = _count3(T, c_N, seen_N, t_N)
        mid_N = jnp.where(k3_N == 1, _lookup_held_out(T["middle"], v_N, t_N), p_mid_N)
        held_N = _held_out(jnp.maximum(k3_N, 1), T["C"][c_N], T["N"][c_N], T["d"], mid_N)
        p3_N = jnp.where(k3_N >= 1, held_N, p3_N)
    return jnp.where(u_N >= 0, p3_N, bigram(T["bigram"], v_N, t_N))


def rows(T, u_N, v_N, t_N=None):
    """p(. | u, v) per context, (N, V); given the targets t_N, with each occurrence (u, v, t) left out of the
    counts where they hold it (training positions)."""
    if T["order"] == 2:
        return _rows(T["bigram"], v_N) if t_N is None else _rows_held_out(T["bigram"], v_N, t_N)
    c_N, seen_N = _context(T, u_N, v_N)
    mid_NxV = _rows(T["middle"], v_N)
    tri_NxV = jnp.where(seen_N[:, None], T["alpha"][c_N][:, None] * mid_NxV, mid_NxV)
    tri_NxV = _scatter(tri_NxV, T["row_ptr"], T["cols"], T["padded_mass"], T["j"], c_N, seen_N)
    if t_N is None:
        return jnp.where((u_N >= 0)[:, None], tri_NxV, _rows(T["bigram"], v_N))
    k3_N = jnp.where(u_N >= 0, _count3(T, c_N, seen_N, t_N), 0.0)
    mid_NxV = jnp.where((k3_N == 1)[:, None], _rows_held_out(T["middle"], v_N, t_N), mid_NxV)
    S_NxV = _scatter(jnp.zeros_like(mid_NxV), T["row_ptr"], T["cols"], T["padded_mass"], T["j"], c_N, seen_N)
    held_NxV = _held_out_rows(S_NxV, t_N, jnp.maximum(k3_N, 1), T["C"][c_N], T["N"][c_N], T["d"], mid_NxV)
    tri_NxV = jnp.where((k3_N >= 1)[:, None], held_NxV, tri_NxV)
    return jnp.where((u_N >= 0)[:, None], tri_NxV, _rows_held_out(T["bigram"], v_N, t_N))


def _count3(T, c_N, seen_N, t_N):
    """c(u v t) per token from the context index c (0 where the context or the trigram was never seen)."""
    k_N, found_N = _entry3(T, c_N, t_N)
    return jnp.where(seen_N & found_N, T["padded_counts"][k_N], 0.0)


def previous(idx_BxT):
    """The token before each input token, -1 at a window's first position (the trigram's u)."""
    return jnp.pad(idx_BxT[:, :-1], ((0, 0), (1, 0)), constant_values=-1)


def mix(logits_BxTxV, a_BxT, p_BxTxV, detach: bool = False):
    """log(g softmax(z) + (1 - g) p), g = sigmoid(a); detach: the same values, with the gradient of z that of its
    own log-softmax (ngram_memory_detach)."""
    ls_BxTxV = jax.nn.log_softmax(logits_BxTxV, -1)
    model_BxTxV = jax.lax.stop_gradient(ls_BxTxV) if detach else ls_BxTxV
    out = jnp.logaddexp(jax.nn.log_sigmoid(a_BxT)[..., None] + model_BxTxV,
                        jax.nn.log_sigmoid(-a_BxT)[..., None] + jnp.log(p_BxTxV))
    return out + (ls_BxTxV - model_BxTxV) if detach else out


class Gate(nn.Module):
    """a = h . w_g + b_g (the gate's logit), w_g (1, D) normal(0.02) as every Linear, b_g at its configured start."""

    bias_init: float = 0.0

    @nn.compact
    def __call__(self, h_BxTxD):
        w_1xD = self.param("weight", normal(0.02), (1, h_BxTxD.shape[-1]))
        b_1 = self.param("bias", nn.initializers.constant(self.bias_init), (1,))
        return (h_BxTxD @ w_1xD[0]) + b_1[0]


class NgramMemory(nn.Module):
    """The head_mixture slot's module: (h, idx, logits) -> the mixture's log-probabilities over the V ids; `loss`
    -log p_mix(target), eager or fused (`fused_loss`). Parameters: gate/weight (1, D), gate/bias (1,)."""

    cfg: GPTConfig
    ngram_stats: Any = None

    def setup(self):
        self.gate = Gate(self.cfg.ngram_memory_gate_bias)

    def __call__(self, h_BxTxD, idx_BxT, logits_BxTxV, targets_BxT=None):
        """targets (training): the memory's rows leave each target's own occurrence out of the counts."""
        a_BxT = self.gate(h_BxTxD)
        if self.ngram_stats is None and self.is_initializing():  # init creates the gate; the tables come with apply
            return logits_BxTxV
        B, T, V = logits_BxTxV.shape
        u_N = previous(idx_BxT).reshape(-1)
        t_N = None if targets_BxT is None else targets_BxT.reshape(-1)
        p_NxV = rows(tables_of(self.cfg, self.ngram_stats, logits_BxTxV.dtype), u_N, idx_BxT.reshape(-1), t_N)
        return mix(logits_BxTxV, a_BxT, p_NxV.reshape(B, T, V), self.cfg.ngram_memory_detach)

    def loss(self, head, h_BxTxD, E_VxD, idx_BxT, targets_BxT, chunk=None, held_out: bool = False):
        """-mean log p_mix(target) through the tied `head` (its logits h E^T (+ lm_head/bias)); chunk: the fused
        one-pass loss `chunk` rows at a time (fused_loss), None: from the full log-probabilities. held_out
        (training): the memory's estimate without each target's own occurrence in the counts."""
        if chunk is None:
            logp_BxTxV = self(h_BxTxD, idx_BxT, head(h_BxTxD, E_VxD), targets_BxT if held_out else None)
            return -jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1).mean()
        b_V = jnp.zeros(E_VxD.shape[0], E_VxD.dtype) if head.lm_head is None else head.lm_head.bias
        return fused_loss(self.gate, self.cfg, self.ngram_stats, h_BxTxD, E_VxD, b_V, idx_BxT, targets_BxT, chunk,
                          held_out)


def _mixture_loss(chunk: int, detach: bool = False):
    """mean_n -log(g_n softmax(h_n W^T + b)_{t_n} + (1 - g_n) q_n), g = sigmoid(a), with its custom gradient."""

    def chunked(h_NxD, w_VxD, b_V, a_N, lq_N, t_N):
        N, D = h_NxD.shape
        K = -(-N // chunk)  # chunks, the last one padded with zero-weight rows
        pad = K * chunk - N

        def split(x):
            return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape((K, chunk) + x.shape[1:])

        lg_N, l1g_N = jax.nn.log_sigmoid(a_N), jax.nn.log_sigmoid(-a_N)
        xs = tuple(split(x) for x in (h_NxD, t_N, jnp.ones((N,), h_NxD.dtype), lg_N, l1g_N, lq_N))

        def body(carry, xs):
            G_W, G_b = carry
            h_CxD, t_C, k_C, lg_C, l1g_C, lq_C = xs
            z_CxV = h_CxD @ w_VxD.T + b_V
            m_C = z_CxV.max(-1)
            e_CxV = jnp.exp(z_CxV - m_C[:, None])
            s_C = e_CxV.sum(-1)
            zt_C = jnp.take_along_axis(z_CxV, t_C[:, None], axis=1)[:, 0]
            x_C = lg_C + zt_C - (m_C + jnp.log(s_C))  # log g p_model(t)
            lmix_C = jnp.logaddexp(x_C, l1g_C + lq_C)
            r_C = jnp.exp(x_C - lmix_C) * k_C  # the model's responsibility (0 on padding)
            w_C1 = ((k_C if detach else r_C) / s_C)[:, None]  # detach: the head's own cross-entropy gradient
            G_W = G_W + e_CxV.T @ (h_CxD * w_C1)  # r-weighted P^T h
            G_b = G_b + e_CxV.T @ w_C1[:, 0]
            return (G_W, G_b), (lmix_C * k_C, r_C, (e_CxV @ w_VxD) * w_C1)

        (G_W, G_b), (lmix, r, G_h) = jax.lax.scan(body, (jnp.zeros_like(w_VxD), jnp.zeros_like(b_V)), xs)
        r_N = r.reshape(-1)[:N]
        y_N = jnp.ones_like(r_N) if detach else r_N  # the weight of the onehot terms
        G_h = G_h.reshape(K * chunk, D)[:N] - y_N[:, None] * w_VxD[t_N]  # - r Y W
        G_W = G_W.at[t_N].add(-y_N[:, None] * h_NxD)
        G_b = G_b.at[t_N].add(-y_N)
        return -lmix.sum() / N, (G_h, G_W, G_b, jax.nn.sigmoid(a_N) - r_N)

    @jax.custom_vjp
    def loss(h_NxD, w_VxD, b_V, a_N, lq_N, t_N):
        return chunked(h_NxD, w_VxD, b_V, a_N, lq_N, t_N)[0]

    def fwd(h_NxD, w_VxD, b_V, a_N, lq_N, t_N):
        value, grads = chunked(h_NxD, w_VxD, b_V, a_N, lq_N, t_N)
        return value, (grads, lq_N, t_N, h_NxD.shape[0])

    def bwd(residuals, g):
        (G_h, G_W, G_b, G_a), lq_N, t_N, n = residuals
        s = g / n
        return G_h * s, G_W * s, G_b * s, G_a * s, jnp.zeros_like(lq_N), np.zeros(t_N.shape, jax.dtypes.float0)

    loss.defvjp(fwd, bwd)
    return loss


def fused_loss(gate, cfg: GPTConfig, ngram_stats, h_BxTxD, w_VxD, b_V, idx_BxT, targets_BxT, chunk: int,
               held_out: bool = False):
    """-mean log p_mix(target) of the tied head h w^T + b (b = 0 without an output bias), without the B x T x V
    logits or n-gram rows: the same number as the eager mixture's loss. gate: h -> the gate's logit a.
    held_out (training): the memory's estimate without each target's own occurrence in the counts."""
    h_NxD, t_N = h_BxTxD.reshape(-1, h_BxTxD.shape[-1]), targets_BxT.reshape(-1)
    a_N = gate(h_NxD)
    T = tables_of(cfg, ngram_stats, h_NxD.dtype)
    lq_N = jax.lax.stop_gradient(jnp.log(prob(T, previous(idx_BxT).reshape(-1), idx_BxT.reshape(-1), t_N, held_out)))
    return _mixture_loss(chunk, cfg.ngram_memory_detach)(h_NxD, w_VxD, b_V, a_N, lq_N, t_N)


# what ngram_memory fills in the Flax GPT (jaxmodel/model.py): a second distribution mixed with the head's
FILLS = {"head_mixture": NgramMemory}
