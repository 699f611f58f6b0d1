"""The n-gram memory alone as a language model: its cross-entropy on the validation windows of docs/protocol.md
(val_loss's 563 windows of 64 tokens; the target at position t of a window has the window's own token t as its
context), counted on train.bin only.

    python benchmarks/ngram_memory_alone.py [--data-dir DIR]

Prints the Good-Turing unigram, the interpolated Kneser-Ney bigram and trigram of dreamteam/components/ngram_memory.py
with each lowest order ("gt", "kn"), and, as an independent check of the trigram, an interpolated Kneser-Ney trigram
(Chen & Goodman 1998: the middle order from continuation counts N1+(. v w), discounted by Ney's estimate, over
the "kn" bigram's lowest order; the first position of a window, which has one token of context, uses the
bigram), and the simpler trigram whose lower order is the component's own "gt" bigram (interpolated absolute
discounting over it). The last two are written here from the counts, separately from the component.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dreamteam import data  # noqa: E402
from dreamteam.components import ngram_memory as nm  # noqa: E402
from dreamteam.components.good_turing_prior import probabilities  # noqa: E402


def interpolate(ctx_keys, w_keys, counts, ctx_query, w_query, lower_p, V):
    """Interpolated absolute discounting of (context, w) counts over the lower order's probabilities lower_p
    (per query), Ney's discount: max(c - d, 0) / c(ctx) + d N1+(ctx .) / c(ctx) lower, lower where c(ctx) = 0."""
    d = nm.ney_discount(counts)
    ctx_u, inv = np.unique(ctx_keys, return_inverse=True)
    c_ctx = np.bincount(inv, weights=counts)
    n_ctx = np.bincount(inv).astype(np.float64)
    keys = ctx_keys * V + w_keys  # sorted as the inputs are
    qk = ctx_query * V + w_query
    k = np.minimum(np.searchsorted(keys, qk), len(keys) - 1)
    c = np.where(keys[k] == qk, counts[k], 0)
    j = np.minimum(np.searchsorted(ctx_u, ctx_query), len(ctx_u) - 1)
    seen = ctx_u[j] == ctx_query
    cc = np.where(seen, c_ctx[j], 1.0)
    p = np.maximum(c - d, 0) / cc + d * np.where(seen, n_ctx[j], 0) / cc * lower_p
    return np.where(seen, p, lower_p)


def trigram_cross_entropy(train, x_NxT, y_NxT, V, middle="continuation"):
    """middle: "continuation" (Kneser-Ney's middle order, over the "kn" lowest order) or "bigram" (the component's
    own "gt" bigram as the lower order: interpolated absolute discounting over it)."""
    stats = nm.bigram_stats(train, V)
    p_low, _ = nm.low_order(stats, "kn")
    t = train.astype(np.int64)
    tri, tri_c = np.unique((t[:-2] * V + t[1:-1]) * V + t[2:], return_counts=True)
    vw = tri % (V * V)
    cont_keys, cont_c = np.unique(vw, return_counts=True)  # N1+(. v w): distinct u before v w
    u_v = tri // V  # the trigram's context u V + v
    x, y = x_NxT.astype(np.int64), y_NxT.astype(np.int64)
    prev = np.concatenate([np.full((x.shape[0], 1), -1), x[:, :-1]], axis=1)  # -1: no second token of context
    v, w, u = x.ravel(), y.ravel(), prev.ravel()
    bigram = nm.prob(nm.kneser_ney(stats, "kn" if middle == "continuation" else "gt"), v, w)
    if middle == "continuation":
        p2 = interpolate(cont_keys // V, cont_keys % V, cont_c.astype(np.float64), v, w, p_low[w], V)
    else:
        p2 = bigram
    has_u = u >= 0
    p3 = interpolate(u_v, tri % V, tri_c.astype(np.float64), np.where(has_u, u * V + v, 0), w, p2, V)
    return float(-np.mean(np.log(np.where(has_u, p3, bigram))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    ds = data.load(args.data_dir, os.environ)
    V = 50304
    x, y = data.val_windows(ds.val)
    print(f"validation windows {x.shape[0]} x {x.shape[1]} = {y.size} targets; train.bin {len(ds.train)} tokens")
    t0 = time.perf_counter()
    stats = nm.bigram_stats(ds.train, V)
    print(f"bigram counts: {len(stats.keys)} distinct bigrams in {1e3 * (time.perf_counter() - t0):.0f} ms")
    p_gt = probabilities(stats.unigram)
    print(f"Good-Turing unigram                 {-np.mean(np.log(p_gt[y.ravel()])):.4f}")
    for low in nm.LOW_ORDERS:
        t0 = time.perf_counter()
        tables = nm.kneser_ney(stats, low)
        ms = 1e3 * (time.perf_counter() - t0)
        ce = -np.mean(np.log(nm.prob(tables, x.ravel(), y.ravel())))
        print(f"Kneser-Ney bigram, lowest order {low}  {ce:.4f}   (d = {tables.discount:.4f}, tables in {ms:.0f} ms, "
              f"longest row {tables.max_row})")
    u = np.pad(x[:, :-1].astype(np.int64), ((0, 0), (1, 0)), constant_values=-1)  # no u at a window's start
    for low in nm.LOW_ORDERS:  # the component's ngram_memory_order=3
        t3 = nm.kneser_ney_trigram(stats, low)
        ce = -np.mean(np.log(nm.prob3(t3, u.ravel(), x.ravel(), y.ravel())))
        print(f"Kneser-Ney trigram, lowest order {low} {ce:.4f}   (d3 = {t3.discount:.4f}, {len(t3.keys)} trigrams "
              f"after {len(t3.ctx_keys)} contexts, longest row {t3.max_row})")
    print(f"Kneser-Ney trigram (reference)      {trigram_cross_entropy(ds.train, x, y, V):.4f}")
    print(f"trigram over the gt bigram (ref.)   {trigram_cross_entropy(ds.train, x, y, V, 'bigram'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
