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
  - "gt" (default): the Good-Turing unigram p_GT of dreamteam/good_turing.py (Good 1953, Turing's estimate), which
    gives every id of the vocabulary mass (N1 / N shared by the ids never seen);
  - "kn": the continuation unigram (Kneser-Ney's lower order), itself discounted and interpolated with p_GT:
        p_low(w) = max(N1+(. w) - d1, 0) / N1+(. .)  +  d1 T1 / N1+(. .) p_GT(w)
    T1 = #{w : N1+(. w) > 0}, d1 = n1' / (n1' + 2 n2') from the continuation counts' count-of-counts.
On tiny Shakespeare the bigram alone scores a cross-entropy of 5.053 on the validation windows with "gt" against
5.064 with "kn" (docs/personas/alan_turing.md, "n-gram memory"), so "gt" is the default.
Each row sums to one: sum_w (c(v, w) - d) / c(v) = 1 - d N1+(v .) / c(v) = 1 - alpha(v), and p_low sums to one.

Stored exactly and compactly (`Tables`): the sorted keys v V + w of the seen bigrams (V^2 < 2^32 for V = 50304,
so they fit uint32 where JAX runs without x64) with their discounted mass (c(v, w) - d) / c(v), alpha (V,) and
p_low (V,). The probability of a target t after v is one binary search and one multiply-add:
    p(t | v) = mass[k] [keys[k] == v V + t] + alpha(v) p_low(t),     k = searchsorted(keys, v V + t)
and the row p(. | v) is alpha(v) p_low plus a scatter of v's entries keys[row_ptr[v] : row_ptr[v + 1]].

The mixture (the head_mixture slot). With h the final hidden state at a position, z the model's logits there, v
the position's own input token (the previous token of the target: targets[:, t] = idx[:, t + 1], so the context
of target t is idx[:, t], always known inside the window):

    g = sigmoid(h . w_g + b_g),     p_mix(t) = g softmax(z)_t + (1 - g) p(t | v)
    log p_mix(t) = logaddexp(log g + z_t - lse(z), log(1 - g) + log p(t | v))

The loss -log p_mix(target) needs only the target's probabilities. Its gradients: with r = g p_model(t) / p_mix(t)
the model's responsibility for the target, d/dz = r (softmax(z) - onehot(t)) (the cross-entropy's, scaled by r)
and d/d(h . w_g + b_g) = g - r.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATHEMATICS = (
    "p(w|v) = max(c(v,w) - d, 0)/c(v) + d N1+(v.)/c(v) p_low(w) (interpolated Kneser-Ney bigram of train.bin, "
    "d = n1/(n1 + 2 n2)); p_low = the discounted continuation unigram interpolated with the Good-Turing unigram; "
    "g = sigmoid(h.w_g + b_g), p_mix = g softmax(z) + (1 - g) p(.|previous token); loss -log p_mix(target)"
)
SOURCE = ("I. J. Good, The population frequencies of species and the estimation of population parameters, 1953 "
          "(Turing's estimate); R. Kneser and H. Ney, Improved backing-off for m-gram language modeling, 1995; "
          "S. F. Chen and J. Goodman, An empirical study of smoothing techniques for language modeling, 1998")
LOW_ORDERS = ("kn", "gt")


@dataclass(frozen=True)
class BigramStats:
    """The counts of a token stream that the n-gram memory is built from: the distinct bigrams as sorted keys
    v V + w with their counts, and the unigram counts (V,)."""

    vocab_size: int
    keys: np.ndarray  # (nnz,) int64, sorted, v * vocab_size + w
    counts: np.ndarray  # (nnz,) int64, c(v, w) > 0
    unigram: np.ndarray  # (V,) int64, how often each id occurs in the stream

    def __hash__(self):  # a model field in Flax: hashed by identity, as the stream it was counted from
        return id(self)

    def __eq__(self, other):
        return self is other


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
    return BigramStats(vocab_size, keys, counts.astype(np.int64), np.bincount(ids, minlength=vocab_size).astype(np.int64))


def ney_discount(counts) -> float:
    """d = n1 / (n1 + 2 n2) (Ney, Essen and Kneser 1994), n_r the number of the counts equal to r."""
    counts = np.asarray(counts)
    n1, n2 = float((counts == 1).sum()), float((counts == 2).sum())
    if n1 == 0:  # nothing seen once: no evidence for unseen events; the smallest discount that keeps rows > 0
        return 0.5 / max(1.0, float(counts.max(initial=1)))
    return n1 / (n1 + 2.0 * n2)


@dataclass(frozen=True)
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

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


def low_order(stats: BigramStats, low: str = "gt") -> tuple[np.ndarray, float]:
    """(p_low (V,), d1): the lowest order of the bigram (module docstring) and its discount (0 for "gt")."""
    from dreamteam.good_turing import probabilities

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
    V = stats.vocab_size
    p_low, d1 = low_order(stats, low)
    d = ney_discount(stats.counts)
    v = stats.keys // V
    c_v = np.bincount(v, weights=stats.counts, minlength=V)  # c(v)
    n_v = np.bincount(v, minlength=V).astype(np.float64)  # N1+(v .)
    seen = c_v > 0
    alpha = np.ones(V)
    alpha[seen] = d * n_v[seen] / c_v[seen]
    mass = (stats.counts - d) / c_v[v]
    row_ptr = np.concatenate([[0], np.cumsum(n_v.astype(np.int64))])
    return Tables(V, stats.keys.astype(np.int64), mass, alpha, p_low, row_ptr, int(n_v.max(initial=0)), d, d1)


def prob(tables: Tables, v, t) -> np.ndarray:
    """p(t | v) elementwise by binary search (float64)."""
    v, t = np.asarray(v, np.int64), np.asarray(t, np.int64)
    key = v * tables.vocab_size + t
    k = np.minimum(np.searchsorted(tables.keys, key), len(tables.keys) - 1)
    stored = np.where(tables.keys[k] == key, tables.mass[k], 0.0)
    return stored + tables.alpha[v] * tables.p_low[t]


def rows(tables: Tables, v) -> np.ndarray:
    """The rows p(. | v) (len(v), V), float64."""
    v = np.asarray(v, np.int64).reshape(-1)
    out = tables.alpha[v, None] * tables.p_low[None, :]
    for n, ctx in enumerate(v):
        lo, hi = tables.row_ptr[ctx], tables.row_ptr[ctx + 1]
        out[n, tables.keys[lo:hi] % tables.vocab_size] += tables.mass[lo:hi]
    return out


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
