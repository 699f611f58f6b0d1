"""ngram_memory: a smoothed bigram memory of train.bin whose next-token distribution the model mixes with its own
through a learned gate per position. numpy only, framework-neutral: the statistics, the Kneser-Ney tables and a
float64 reference of every lookup (the torch and Flax modules, torchport/ngram_memory.py and
jaxmodel/ngram_memory.py, compute the same numbers).

Counted on train.bin only, never on validation data: c(v, w) how often w follows v, c(v) = sum_w c(v, w),
N1+(v .) = #{w : c(v, w) > 0} the distinct successors of v, N1+(. w) = #{v : c(v, w) > 0} the distinct
predecessors of w, N1+(. .) the number of distinct bigrams.

Interpolated Kneser-Ney bigram (Kneser & Ney 1995, in the interpolated form of Chen & Goodman 1998):

    p(w | v) = max(c(v, w) - d, 0) / c(v)  +  alpha(v) p_low(w),      alpha(v) = d N1+(v .) / c(v)
    p(w | v) = p_low(w)                                               where c(v) = 0 (alpha(v) = 1)

with Ney's discount d = n1 / (n1 + 2 n2), n_r the number of distinct bigrams seen exactly r times (0 < d < 1).
The lowest order (ngram_memory_low):
  - "gt" (default): the Good-Turing unigram p_GT of dreamteam/components/good_turing_prior.py (Good 1953, Turing's estimate), which
    gives every id of the vocabulary mass (N1 / N shared by the ids never seen);
  - "kn": the continuation unigram (Kneser-Ney's lower order), itself discounted and interpolated with p_GT:
        p_low(w) = max(N1+(. w) - d1, 0) / N1+(. .)  +  d1 T1 / N1+(. .) p_GT(w)
    T1 = #{w : N1+(. w) > 0}, d1 = n1' / (n1' + 2 n2') from the continuation counts' count-of-counts.
On tiny Shakespeare the bigram alone scores a cross-entropy of 5.053 on the validation windows with "gt" against
5.064 with "kn" (docs/personas/alan_turing.md, "n-gram memory"), so "gt" is the default.
Each row sums to one: sum_w (c(v, w) - d) / c(v) = 1 - d N1+(v .) / c(v) = 1 - alpha(v), and p_low sums to one.

With ngram_memory_order=3, the interpolated Kneser-Ney trigram (`TrigramTables`, `kneser_ney_trigram`): the
counts c(u v w) discounted by Ney's d3 over Kneser-Ney's middle order, the same interpolation of the continuation
counts N1+(. v w) over p_low; a window's first position, whose context is one token, keeps the bigram. Alone on
the validation windows it scores 4.817 against the bigram's 5.053 (benchmarks/ngram_memory_alone.py).

Stored exactly and compactly (`Tables`): the sorted keys v V + w of the seen bigrams (V^2 < 2^32 for V = 50304,
so they fit uint32 where JAX runs without x64) with their discounted mass (c(v, w) - d) / c(v), alpha (V,) and
p_low (V,). The probability of a target t after v is one binary search and one multiply-add:
    p(t | v) = mass[k] [keys[k] == v V + t] + alpha(v) p_low(t),     k = searchsorted(keys, v V + t)
and the row p(. | v) is alpha(v) p_low plus a scatter of v's entries keys[row_ptr[v] : row_ptr[v + 1]].

The mixture (the head_mixture slot). With h the final hidden state at a position, z the model's logits there, v
the position's own input token (the previous token of the target: targets[:, t] = idx[:, t + 1], so the context
of target t is idx[:, t], always known inside the window; the trigram's u is idx[:, t - 1]):

    g = sigmoid(h . w_g + b_g),     p_mix(t) = g softmax(z)_t + (1 - g) p(t | v)
    log p_mix(t) = logaddexp(log g + z_t - lse(z), log(1 - g) + log p(t | v))

The loss -log p_mix(target) needs only the target's probabilities. Its gradients: with r = g p_model(t) / p_mix(t)
the model's responsibility for the target, d/dz = r (softmax(z) - onehot(t)) (the cross-entropy's, scaled by r)
and d/d(h . w_g + b_g) = g - r.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamteam.components import Component

LOW_ORDERS = ("kn", "gt")


# eq=False: compared and hashed by identity (a Flax model field holding arrays; the stream it was counted from)
@dataclass(frozen=True, eq=False)
class BigramStats:
    """The counts of a token stream that the n-gram memory is built from: the distinct bigrams as sorted keys
    v V + w with their counts, and the unigram counts (V,)."""

    vocab_size: int
    keys: np.ndarray  # (nnz,) int64, sorted, v * vocab_size + w
    counts: np.ndarray  # (nnz,) int64, c(v, w) > 0
    unigram: np.ndarray  # (V,) int64, how often each id occurs in the stream
    trigram_keys: np.ndarray = None  # (nnz3,) int64, sorted, (u V + v) V + w (V^3 < 2^63)
    trigram_counts: np.ndarray = None  # (nnz3,) int64, c(u, v, w) > 0



def bigram_stats(ids, vocab_size: int) -> BigramStats:
    """The bigram and unigram counts of the stream `ids` (train.bin; 96,318 distinct bigrams in 40 ms)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size < 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ngram_memory needs a 1-D integer token stream of at least 2 ids; got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got [{ids.min()}, {ids.max()}]")
    if vocab_size**2 > 2**32:
        raise ValueError(f"vocab_size {vocab_size}: the bigram keys v V + w must fit 32 bits (V <= 65536)")
    keys, counts = np.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)
    tri_keys, tri_counts = np.unique((ids[:-2] * vocab_size + ids[1:-1]) * vocab_size + ids[2:], return_counts=True)
    return BigramStats(vocab_size, keys, counts.astype(np.int64), np.bincount(ids, minlength=vocab_size).astype(np.int64),
                       tri_keys, tri_counts.astype(np.int64))


def ney_discount(counts) -> float:
    """d = n1 / (n1 + 2 n2) (Ney, Essen and Kneser 1994), n_r the number of the counts equal to r."""
    counts = np.asarray(counts)
    n1, n2 = float((counts == 1).sum()), float((counts == 2).sum())
    if n1 == 0:  # nothing seen once: no evidence for unseen events; the smallest discount that keeps rows > 0
        return 0.5 / max(1.0, float(counts.max(initial=1)))
    return n1 / (n1 + 2.0 * n2)


@dataclass(frozen=True, eq=False)  # identity, as BigramStats
class Tables:
    """The interpolated Kneser-Ney bigram, stored exactly (module docstring), float64."""

    vocab_size: int
    keys: np.ndarray  # (nnz,) int64 sorted keys v V + w of the seen bigrams
    mass: np.ndarray  # (nnz,) (c(v, w) - d) / c(v)
    alpha: np.ndarray  # (V,) d N1+(v .) / c(v), 1 where c(v) = 0
    p_low: np.ndarray  # (V,) the lowest order, > 0 for every id
    row_ptr: np.ndarray  # (V + 1,) v's entries are keys[row_ptr[v] : row_ptr[v + 1]]
    max_row: int  # the most entries of one context (the width of a padded gather of a row)
    discount: float
    low_discount: float
    counts: np.ndarray  # (nnz,) c(v, w) of the stored entries, float64 (exact integers)
    context_count: np.ndarray  # (V,) c(v)
    context_types: np.ndarray  # (V,) N1+(v .)


def low_order(stats: BigramStats, low: str = "gt") -> tuple[np.ndarray, float]:
    """(p_low (V,), d1): the lowest order of the bigram (module docstring) and its discount (0 for "gt")."""
    from dreamteam.components.good_turing_prior import probabilities

    if low not in LOW_ORDERS:
        raise ValueError(f"ngram_memory_low={low!r}; expected one of {list(LOW_ORDERS)}")
    p_gt = probabilities(stats.unigram)
    if low == "gt":
        return p_gt, 0.0
    V = stats.vocab_size
    cont = np.bincount(stats.keys % V, minlength=V).astype(np.float64)  # N1+(. w)
    total = float(cont.sum())  # N1+(. .)
    d1 = ney_discount(cont[cont > 0])
    types = float((cont > 0).sum())
    return np.maximum(cont - d1, 0.0) / total + d1 * types / total * p_gt, d1


def kneser_ney(stats: BigramStats, low: str = "gt") -> Tables:
    """The interpolated Kneser-Ney bigram of the counts (module docstring)."""
    p_low, d1 = low_order(stats, low)
    return _interpolated(stats.vocab_size, stats.keys, stats.counts, p_low, d1)


def _interpolated(V: int, keys, counts, p_low, d1: float, d: float | None = None) -> Tables:
    """max(c(v, w) - d, 0) / c(v) + d N1+(v .) / c(v) p_low(w) for the counts c of the sorted keys v V + w (d:
    Ney's discount of the counts unless given)."""
    d = ney_discount(counts) if d is None else d
    v = keys // V
    c_v = np.bincount(v, weights=counts, minlength=V)  # c(v)
    n_v = np.bincount(v, minlength=V).astype(np.float64)  # N1+(v .)
    seen = c_v > 0
    alpha = np.ones(V)
    alpha[seen] = d * n_v[seen] / c_v[seen]
    mass = (counts - d) / c_v[v]
    row_ptr = np.concatenate([[0], np.cumsum(n_v.astype(np.int64))])
    return Tables(V, keys.astype(np.int64), mass, alpha, p_low, row_ptr, int(n_v.max(initial=0)), d, d1,
                  counts.astype(np.float64), c_v, n_v)


@dataclass(frozen=True, eq=False)  # identity, as BigramStats
class TrigramTables:
    """The interpolated Kneser-Ney trigram (ngram_memory_order=3), float64:

        p(w | u, v) = max(c(u v w) - d3, 0) / c(u v .) + d3 N1+(u v .) / c(u v .) p_mid(w | v)
        p(w | u, v) = p_mid(w | v)  where c(u v .) = 0;      p(w | v) = p_bigram(w | v)  where there is no u

    p_mid is Kneser-Ney's middle order: the same interpolation of the continuation counts N1+(. v w) (how many
    distinct u precede v w) over the same lowest order; p_bigram the bigram of the counts, for a window's first
    position, whose context is one token. The contexts u V + v are sorted keys (they fit uint32); context c's
    entries are keys[row_ptr[c] : row_ptr[c + 1]] = c V + w, sorted (int64: c V + w can pass 2^32)."""

    vocab_size: int
    bigram: Tables
    middle: Tables
    ctx_keys: np.ndarray  # (n_ctx,) int64 sorted u V + v of the contexts seen before a third token
    alpha: np.ndarray  # (n_ctx,) d3 N1+(u v .) / c(u v .)
    keys: np.ndarray  # (nnz3,) int64 sorted c V + w, c the context's index
    cols: np.ndarray  # (nnz3,) w
    mass: np.ndarray  # (nnz3,) (c(u v w) - d3) / c(u v .)
    row_ptr: np.ndarray  # (n_ctx + 1,)
    max_row: int
    discount: float
    counts: np.ndarray  # (nnz3,) c(u v w), float64
    context_count: np.ndarray  # (n_ctx,) c(u v .)
    context_types: np.ndarray  # (n_ctx,) N1+(u v .)


def kneser_ney_trigram(stats: BigramStats, low: str = "gt", p_low=None, discounts=None) -> TrigramTables:
    """The interpolated Kneser-Ney trigram of the counts (TrigramTables). p_low and discounts (bigram, middle,
    trigram): given instead of estimated from the counts (the held-out estimate's reference in the tests)."""
    V = stats.vocab_size
    d1 = 0.0
    if p_low is None:
        p_low, d1 = low_order(stats, low)
    d2, dm, d3 = (None, None, None) if discounts is None else discounts
    vw, cont = np.unique(stats.trigram_keys % (V * V), return_counts=True)  # N1+(. v w)
    middle = _interpolated(V, vw, cont.astype(np.int64), p_low, d1, dm)
    d3 = ney_discount(stats.trigram_counts) if d3 is None else d3
    ctx_keys, c_of = np.unique(stats.trigram_keys // V, return_inverse=True)
    c_ctx = np.bincount(c_of, weights=stats.trigram_counts)
    n_ctx = np.bincount(c_of).astype(np.float64)
    cols = stats.trigram_keys % V
    row_ptr = np.concatenate([[0], np.cumsum(n_ctx.astype(np.int64))])
    return TrigramTables(V, _interpolated(V, stats.keys, stats.counts, p_low, d1, d2), middle, ctx_keys,
                         d3 * n_ctx / c_ctx, c_of.astype(np.int64) * V + cols, cols,
                         (stats.trigram_counts - d3) / c_ctx[c_of], row_ptr, int(n_ctx.max(initial=0)), d3,
                         stats.trigram_counts.astype(np.float64), c_ctx, n_ctx)


def context_index(t3: TrigramTables, u, v):
    """(c, seen): the index of the context u V + v among the trigram contexts, and whether it is one (u >= 0)."""
    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    key = np.where(u >= 0, u, 0) * t3.vocab_size + v
    c = np.minimum(np.searchsorted(t3.ctx_keys, key), len(t3.ctx_keys) - 1)
    return c, (u >= 0) & (t3.ctx_keys[c] == key)


def prob3(t3: TrigramTables, u, v, t) -> np.ndarray:
    """p(t | u, v) elementwise (u = -1: no second token of context, the bigram), float64."""
    u, v, t = (np.asarray(a, np.int64) for a in (u, v, t))
    c, seen = context_index(t3, u, v)
    key = c * t3.vocab_size + t
    k = np.minimum(np.searchsorted(t3.keys, key), len(t3.keys) - 1)
    stored = np.where(t3.keys[k] == key, t3.mass[k], 0.0)
    p_mid = prob(t3.middle, v, t)
    return np.where(u >= 0, np.where(seen, stored + t3.alpha[c] * p_mid, p_mid), prob(t3.bigram, v, t))


def stored3(t3: TrigramTables, u, v) -> np.ndarray:
    """The stored part of the trigram rows, (c(u v w) - d3) / c(u v .) at the seen trigrams and 0 elsewhere
    (and where u = -1), (len(v), V)."""
    u, v = np.asarray(u, np.int64).reshape(-1), np.asarray(v, np.int64).reshape(-1)
    c, seen = context_index(t3, u, v)
    out = np.zeros((len(v), t3.vocab_size))
    for n in np.flatnonzero(seen):
        lo, hi = t3.row_ptr[c[n]], t3.row_ptr[c[n] + 1]
        out[n, t3.cols[lo:hi]] += t3.mass[lo:hi]
    return out


def rows3(t3: TrigramTables, u, v) -> np.ndarray:
    """The rows p(. | u, v) (len(v), V), float64."""
    u, v = np.asarray(u, np.int64).reshape(-1), np.asarray(v, np.int64).reshape(-1)
    c, seen = context_index(t3, u, v)
    mid = rows(t3.middle, v)
    tri = np.where(seen[:, None], t3.alpha[c, None] * mid + stored3(t3, u, v), mid)
    return np.where((u >= 0)[:, None], tri, rows(t3.bigram, v))


def prob(tables: Tables, v, t) -> np.ndarray:
    """p(t | v) elementwise by binary search (float64)."""
    v, t = np.asarray(v, np.int64), np.asarray(t, np.int64)
    key = v * tables.vocab_size + t
    k = np.minimum(np.searchsorted(tables.keys, key), len(tables.keys) - 1)
    stored = np.where(tables.keys[k] == key, tables.mass[k], 0.0)
    return stored + tables.alpha[v] * tables.p_low[t]


def stored(tables: Tables, v) -> np.ndarray:
    """The stored part of the rows, (c(v, w) - d) / c(v) at the seen bigrams and 0 elsewhere, (len(v), V)."""
    v = np.asarray(v, np.int64).reshape(-1)
    out = np.zeros((len(v), tables.vocab_size))
    for n, ctx in enumerate(v):
        lo, hi = tables.row_ptr[ctx], tables.row_ptr[ctx + 1]
        out[n, tables.keys[lo:hi] % tables.vocab_size] += tables.mass[lo:hi]
    return out


def rows(tables: Tables, v) -> np.ndarray:
    """The rows p(. | v) (len(v), V), float64."""
    v = np.asarray(v, np.int64).reshape(-1)
    return tables.alpha[v, None] * tables.p_low[None, :] + stored(tables, v)


# The held-out estimate (training). A training target is an occurrence the counts hold: scored by the tables as
# they stand, the n-gram memory has seen the very event it predicts (a trigram seen once in train.bin gets
# (1 - d3) / c(u v .) of the mass), so the gate learns to trust it on train.bin more than it deserves on
# anything else. Measured: trained that way the gate closed on the memory and the model's own distribution
# dropped out (docs/personas/alan_turing.md, "n-gram memory"). On a training position the memory therefore
# gives the estimate of the counts with that one occurrence removed (leave-one-out, the deleted estimation from
# which Good's and Turing's r* = (r + 1) n_{r+1} / n_r is derived), the discounts and the lowest order kept:
#
#     event seen k >= 1 times in a context seen C times with N distinct successors, lower-order estimate q:
#     p_held(t) = (max(k - 1 - d, 0) + d (N - [k = 1]) q(t)) / (C - 1),      q(t) where C = 1
#
# and the whole row p_held(w) = (S(w) C - delta [w = t] + d (N - [k = 1]) q(w)) / (C - 1), S the stored
# part of the row (max(c(v, w) - d, 0) / C), delta = 1 where k >= 2 and 1 - d where k = 1 (the entry goes).
# For the trigram the occurrence (u, v, t) also leaves Kneser-Ney's middle order where it was the only one
# (k = 1: N1+(. v t) drops by one), so q is the middle's own held-out estimate there. A position whose event
# the counts do not hold (k = 0: not a train.bin occurrence) keeps the full estimate.


def held_out(k, C, N, d, q):
    """p_held(t) elementwise from the event's count k >= 1, its context's count C and distinct successors N, the
    discount d and the lower-order estimate q(t) (the comment above); q where C = 1."""
    k, C, N, q = (np.asarray(a, np.float64) for a in (k, C, N, q))
    return np.where(C > 1, (np.maximum(k - 1 - d, 0.0) + d * (N - (k == 1)) * q) / np.maximum(C - 1, 1), q)


def held_out_rows(S, t, k, C, N, d, q):
    """The rows p_held(. ) (n, V) from the stored parts S (n, V), the held targets t and their k, C, N (n,), the
    discount d and the lower-order rows q (n, V); q where C = 1."""
    C1 = np.maximum(C - 1, 1)[:, None]
    out = (S * C[:, None] + d * (N - (k == 1))[:, None] * q) / C1
    out[np.arange(len(t)), t] -= np.where(k >= 2, 1.0, 1.0 - d) / C1[:, 0]
    return np.where((C > 1)[:, None], out, q)


def count(tables: Tables, v, t) -> np.ndarray:
    """c(v, t) elementwise (0 for a bigram never seen)."""
    v, t = np.asarray(v, np.int64), np.asarray(t, np.int64)
    key = v * tables.vocab_size + t
    k = np.minimum(np.searchsorted(tables.keys, key), len(tables.keys) - 1)
    return np.where(tables.keys[k] == key, tables.counts[k], 0.0)


def prob_held_out(tables: Tables, v, t) -> np.ndarray:
    """p(t | v) with the occurrence (v, t) left out of the counts where they hold it (float64)."""
    v, t = np.asarray(v, np.int64), np.asarray(t, np.int64)
    k = count(tables, v, t)
    held = held_out(np.maximum(k, 1), tables.context_count[v], tables.context_types[v], tables.discount,
                    tables.p_low[t])
    return np.where(k >= 1, held, prob(tables, v, t))


def rows_held_out(tables: Tables, v, t) -> np.ndarray:
    """The rows p(. | v) with the occurrence (v, t) left out where the counts hold it, (len(v), V)."""
    v, t = np.asarray(v, np.int64).reshape(-1), np.asarray(t, np.int64).reshape(-1)
    full = rows(tables, v)
    k = count(tables, v, t)
    q = np.broadcast_to(tables.p_low, full.shape)
    held = held_out_rows(stored(tables, v), t, np.maximum(k, 1), tables.context_count[v], tables.context_types[v], tables.discount, q)
    return np.where((k >= 1)[:, None], held, full)


def count3(t3: TrigramTables, u, v, t) -> np.ndarray:
    """c(u v t) elementwise (0 where u = -1 or the trigram was never seen)."""
    u, v, t = (np.asarray(a, np.int64) for a in (u, v, t))
    c, seen = context_index(t3, u, v)
    key = c * t3.vocab_size + t
    k = np.minimum(np.searchsorted(t3.keys, key), len(t3.keys) - 1)
    return np.where(seen & (t3.keys[k] == key), t3.counts[k], 0.0)


def prob3_held_out(t3: TrigramTables, u, v, t) -> np.ndarray:
    """p(t | u, v) with the occurrence (u, v, t) left out where the counts hold it (u = -1: the bigram's)."""
    u, v, t = (np.asarray(a, np.int64) for a in (u, v, t))
    c, _ = context_index(t3, u, v)
    k3 = count3(t3, u, v, t)
    m = t3.middle
    p_mid = np.where(k3 == 1, held_out(np.maximum(count(m, v, t), 1), m.context_count[v], m.context_types[v],
                                       m.discount, m.p_low[t]), prob(m, v, t))
    held = held_out(np.maximum(k3, 1), t3.context_count[c], t3.context_types[c], t3.discount, p_mid)
    return np.where(u >= 0, np.where(k3 >= 1, held, prob3(t3, u, v, t)), prob_held_out(t3.bigram, v, t))


def rows3_held_out(t3: TrigramTables, u, v, t) -> np.ndarray:
    """The rows p(. | u, v) with the occurrence (u, v, t) left out where the counts hold it, (len(v), V)."""
    u, v, t = (np.asarray(a, np.int64).reshape(-1) for a in (u, v, t))
    c, _ = context_index(t3, u, v)
    k3 = count3(t3, u, v, t)
    m = t3.middle
    mid = np.where((k3 == 1)[:, None], rows_held_out(m, v, t), rows(m, v))
    full = rows3(t3, u, v)
    held = held_out_rows(stored3(t3, u, v), t, np.maximum(k3, 1), t3.context_count[c], t3.context_types[c], t3.discount, mid)
    out = np.where((k3 >= 1)[:, None], held, full)
    return np.where((u >= 0)[:, None], out, rows_held_out(t3.bigram, v, t))


def padded_entries(tables: Tables):
    """(cols, mass), each (nnz + max_row,): the stored entries' columns w and masses followed by max_row zero-mass
    padding entries, so that row_ptr[v] + j is a valid index for every j < max_row: the static-shape gather of a
    row's entries in the model modules (entries past a row's end are masked by j < row_ptr[v + 1] - row_ptr[v])."""
    pad = max(tables.max_row, 1)
    cols = np.concatenate([tables.keys % tables.vocab_size, np.zeros(pad, np.int64)])
    mass = np.concatenate([tables.mass, np.zeros(pad)])
    return cols, mass


def cross_entropy(tables: Tables, ids) -> float:
    """-mean_i log p(ids[i + 1] | ids[i]) over a stream: the n-gram memory alone as a language model."""
    ids = np.asarray(ids, np.int64)
    return float(-np.mean(np.log(prob(tables, ids[:-1], ids[1:]))))


def stats_for(config, train_ids) -> BigramStats | None:
    """The bigram counts a model of `config` needs from the train.bin stream `train_ids`: None without ngram_memory."""
    return bigram_stats(train_ids, config.vocab_size) if config.has("ngram_memory") else None


def validate(cfg) -> list[str]:
    if not cfg.has("ngram_memory"):
        return []
    problems = []
    if cfg.ngram_memory_low not in LOW_ORDERS:
        problems.append(f"ngram_memory_low={cfg.ngram_memory_low!r}; expected one of {list(LOW_ORDERS)}")
    if cfg.ngram_memory_order not in (2, 3):
        problems.append(f"ngram_memory_order={cfg.ngram_memory_order!r}; expected 2 (bigram) or 3 (trigram)")
    return problems


# the mixture needs the tied head's softmax and trains on -log p_mix: the default head and objective
COMPONENT = Component(
    "ngram_memory", ("head_mixture",),
    "interpolated Kneser-Ney bigram or trigram of train.bin (Good-Turing lowest order) mixed in by a learned gate",
    requires=(("head", (None,)), ("objective", (None,))),
    # the lowest order ("gt" or "kn"), the gate's initial bias b_g (0: g = 1/2), the order (2 or 3), and
    # detach: the head trains on its own cross-entropy while the gate learns the mixture (same loss value)
    options=("ngram_memory_low", "ngram_memory_gate_bias", "ngram_memory_order", "ngram_memory_detach"),
    validate=validate,
    math="""\
p(w | v) = max(c(v, w) - d, 0) / c(v) + alpha(v) p_low(w),   alpha(v) = d N1+(v .) / c(v)   (p_low where c(v) = 0)
the interpolated Kneser-Ney bigram of train.bin, Ney's d = n1 / (n1 + 2 n2); p_low the Good-Turing unigram ("gt")
or the discounted continuation unigram interpolated with it ("kn"); order 3: the trigram over the same
interpolation (a window's first position keeps the bigram). With h the final hidden state, z the head's logits:
    g = sigmoid(h . w_g + b_g),   p_mix = g softmax(z) + (1 - g) p(. | previous tokens)
logits = log p_mix over the V ids, loss = -log p_mix(target); d/dz = r (softmax(z) - onehot(t)),
r = g p_model(t) / p_mix(t), and d/d(h . w_g + b_g) = g - r.""",
    source="I. J. Good 1953 (Turing's estimate); Kneser and Ney 1995, \"Improved backing-off for m-gram language "
           "modeling\"; Chen and Goodman 1998, \"An empirical study of smoothing techniques for language modeling\"",
    persona="alan_turing",
)
