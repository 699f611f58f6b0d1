"""Frequency clusters of the vocabulary for adaptive_softmax (Grave et al. 2017), framework-neutral (numpy).

The ids are ordered by their count in train.bin, most frequent first, ties by lower id. With cutoffs
c_0 < c_1 < ... and n_seen the number of ids that occur in training, the clusters are the consecutive
slices of that order between the edges

    0, min(c_0, n_seen), min(c_1, n_seen), ..., n_seen, V        (repeated edges dropped)

the first slice is the head, each further one a tail cluster; the last tail holds exactly the ids never
seen in training (when there are any). Tail cluster i (1-based) has width max(1, D // div^i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clusters:
    order: np.ndarray  # (V,) ids, most frequent first
    rank: np.ndarray  # (V,) position of each id in `order`
    head_size: int
    tail_sizes: tuple[int, ...]
    tail_widths: tuple[int, ...]

    @property
    def edges(self) -> tuple[int, ...]:
        """Start of the head and of each tail in `order`, then V."""
        return tuple(int(e) for e in np.cumsum((0, self.head_size) + self.tail_sizes))


def frequency_order(counts: np.ndarray) -> np.ndarray:
    """Ids by decreasing count, ties broken by the lower id (a stable sort of -count)."""
    return np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable")


def adaptive_clusters(counts, cutoffs, n_embd: int, div: int) -> Clusters:
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("token_counts must be a 1-d array of non-negative counts, one per id")
    V = len(counts)
    n_seen = int((counts > 0).sum())
    if n_seen == 0:
        raise ValueError("token_counts has no id with a positive count: no head cluster to build")
    edges = [0]
    for e in [min(int(c), n_seen) for c in cutoffs] + [n_seen, V]:
        if e > edges[-1]:
            edges.append(e)
    order = frequency_order(counts)
    rank = np.empty(V, dtype=np.int64)
    rank[order] = np.arange(V)
    sizes = np.diff(edges)
    tails = tuple(int(s) for s in sizes[1:])
    widths = tuple(max(1, n_embd // div ** (i + 1)) for i in range(len(tails)))
    return Clusters(order, rank, int(sizes[0]), tails, widths)
