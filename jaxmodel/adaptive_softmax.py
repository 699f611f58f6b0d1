"""adaptive_softmax in Flax: the frequency-clustered output distribution (clusters from
dreamteam/components/adaptive_softmax.py, which also states the mathematics and source).

`log_probs` gives log p over all V ids (in id order); `nll` gives -log p(target) per token without them:
the head softmax (head + C entries) and, per tail cluster, only its own softmax.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dreamteam.components.adaptive_softmax import adaptive_clusters
from dreamteam.config import GPTConfig
from jaxmodel.layers import Linear


def clusters_of(cfg: GPTConfig, token_counts):
    if token_counts is None:
        raise ValueError("adaptive_softmax needs token_counts (the train.bin counts): GPT(cfg, token_counts)")
    counts = np.asarray(token_counts)
    if counts.shape != (cfg.vocab_size,):
        raise ValueError(f"token_counts has shape {counts.shape}; expected ({cfg.vocab_size},)")
    return adaptive_clusters(counts, cfg.adaptive_softmax_cutoffs, cfg.n_embd, cfg.adaptive_softmax_div)


class AdaptiveSoftmax(nn.Module):
    cfg: GPTConfig
    token_counts: object = None

    def setup(self):
        cl = clusters_of(self.cfg, self.token_counts)
        self.cl = cl
        C = len(cl.tail_sizes)
        self.cluster = Linear(C, False, name="cluster") if C else None
        tied = self.cfg.adaptive_softmax_tied_tails
        self.tails = [TailCluster(n, d, tied, name=f"tail_{i}") for i, (n, d) in enumerate(zip(cl.tail_sizes, cl.tail_widths))]

    def tail_scores(self, c, h_NxD, wte_VxD):
        """Tail cluster c's scores of its ids; the ids' embedding rows are gathered only when tied."""
        t, (a, b) = self.tails[c], self.cl.edges[c + 1: c + 3]
        return t(h_NxD, wte_VxD[jnp.asarray(self.cl.order[a:b])] if t.tied else None)

    def head_log_probs(self, h_NxD, wte_VxD):
        """log softmax over [head ids, tail clusters], (N, head_size + C)."""
        head_ids = jnp.asarray(self.cl.order[: self.cl.head_size])
        z_NxH = h_NxD @ wte_VxD[head_ids].T
        if self.cluster is not None:
            z_NxH = jnp.concatenate([z_NxH, self.cluster(h_NxD)], axis=-1)
        return jax.nn.log_softmax(z_NxH, axis=-1)

    def log_probs(self, h_NxD, wte_VxD):
        """log p(w) for every id w, (N, V), in id order."""
        lh = self.head_log_probs(h_NxD, wte_VxD)
        H = self.cl.head_size
        parts = [lh[:, :H]] + [lh[:, H + c, None] + jax.nn.log_softmax(self.tail_scores(c, h_NxD, wte_VxD), axis=-1)
                               for c in range(len(self.tails))]
        return jnp.concatenate(parts, axis=-1)[:, jnp.asarray(self.cl.rank)]  # frequency order -> id order

    def nll(self, h_NxD, wte_VxD, t_N):
        """-log p(t_n) per token, without the N x V log-probabilities."""
        lh = self.head_log_probs(h_NxD, wte_VxD)
        H, edges = self.cl.head_size, self.cl.edges
        pos_N = jnp.asarray(self.cl.rank)[t_N]
        c_N = jnp.searchsorted(jnp.asarray(edges[1:-1]), pos_N, side="right")  # 0 head, c >= 1 tail c
        slot_N = jnp.where(c_N == 0, pos_N, H + c_N - 1)
        lp_N = jnp.take_along_axis(lh, jnp.minimum(slot_N, lh.shape[1] - 1)[:, None], axis=1)[:, 0]
        for c in range(len(self.tails)):  # static shapes: each tail's softmax for every token, kept where used
            in_c = c_N == c + 1
            j_N = jnp.clip(pos_N - edges[c + 1], 0, self.cl.tail_sizes[c] - 1)
            lt_N = jnp.take_along_axis(jax.nn.log_softmax(self.tail_scores(c, h_NxD, wte_VxD), axis=-1),
                                       j_N[:, None], axis=1)[:, 0]
            lp_N = lp_N + jnp.where(in_c, lt_N, 0.0)
        return -lp_N

    def __call__(self, h_NxD, wte_VxD, targets_N=None):
        return self.log_probs(h_NxD, wte_VxD) if targets_N is None else self.nll(h_NxD, wte_VxD, targets_N)


class AdaptiveSoftmaxHead(nn.Module):
    """The head slot's adaptive_softmax: log p over the V ids as the logits, -log p(target) as the loss.
    Its parameters keep the paths of the torch port, transformer/adaptive_softmax/* (IN_TRUNK: the model
    gives this head the trunk's scope)."""

    cfg: GPTConfig
    token_counts: object = None
    dtype: object = None  # unused: every parameter is drawn in the default dtype and cast by init_params
    IN_TRUNK = True

    def setup(self):
        self.adaptive_softmax = AdaptiveSoftmax(self.cfg, self.token_counts)

    def __call__(self, h_BxTxD, wte_VxD):
        """log p(w) for every id, (B, T, V)."""
        B, T, D = h_BxTxD.shape
        return self.adaptive_softmax(h_BxTxD.reshape(-1, D), wte_VxD).reshape(B, T, -1)

    def loss(self, h_BxTxD, wte_VxD, targets_BxT, fast=None):
        """Mean -log p(target): of the V log-probabilities, or (fast given) through the clusters alone (`nll`),
        never the V-wide output."""
        if fast is None:
            return -jnp.take_along_axis(self(h_BxTxD, wte_VxD), targets_BxT[..., None], axis=-1).mean()
        B, T, D = h_BxTxD.shape
        return self.adaptive_softmax(h_BxTxD.reshape(-1, D), wte_VxD, targets_BxT.reshape(-1)).reshape(B, T).mean()


class TailCluster(nn.Module):
    """Scores of a tail cluster's n ids through width d: out(proj(h)); tied: up(proj(h)) against the ids'
    embedding rows wte_nxD (None when untied)."""

    n: int
    d: int
    tied: bool = False

    @nn.compact
    def __call__(self, h_NxD, wte_nxD):
        z_Nxd = Linear(self.d, False, name="proj")(h_NxD)
        if self.tied:
            return Linear(wte_nxD.shape[1], False, name="up")(z_Nxd) @ wte_nxD.T
        return Linear(self.n, False, name="out")(z_Nxd)


# what adaptive_softmax fills in the Flax GPT (jaxmodel/model.py)
FILLS = {"head": AdaptiveSoftmaxHead}
