"""adaptive_softmax: its declaration, and the frequency clusters of the vocabulary (Grave et al. 2017),
framework-neutral (numpy).

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

from dreamteam.components import Component


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


def validate(cfg) -> list[str]:
    if not cfg.has("adaptive_softmax"):
        return []
    problems = []
    c = tuple(cfg.adaptive_softmax_cutoffs)
    if not c or any(b <= a for a, b in zip(c, c[1:])) or c[0] < 1 or c[-1] > cfg.vocab_size:
        problems.append(f"adaptive_softmax_cutoffs={c}: expected increasing counts of ids in [1, vocab_size={cfg.vocab_size}]")
    if cfg.adaptive_softmax_div < 1 or cfg.n_embd // cfg.adaptive_softmax_div ** (len(c) + 1) < 1:
        problems.append(f"adaptive_softmax_div={cfg.adaptive_softmax_div}: the last tail cluster's width "
                        f"n_embd // div^{len(c) + 1} must be at least 1")
    return problems


COMPONENT = Component(
    "adaptive_softmax", ("head",), "frequency-clustered output distribution (Grave et al. 2017)",
    # the head: the cutoffs[0] most frequent ids, then a tail cluster per further cutoff and one for the rest of
    # the ids seen in training, and a last one for every id never seen; tail cluster i (1-based) projects to width
    # n_embd // div^i; tied tails score a cluster's ids with their token-embedding rows through a map of its width
    options=("adaptive_softmax_cutoffs", "adaptive_softmax_div", "adaptive_softmax_tied_tails"),
    validate=validate,
    math="""\
The ids are ordered by their train.bin count (`adaptive_clusters`): a head of the most frequent ids, then tail
clusters c = 1..C, the last holding every id never seen in training. For the final hidden state h:
    p_head = softmax([ h W_head^T ; h W_cluster^T ])        over the head ids and one entry per tail cluster
    p(w) = p_head(w)                                        w in the head
    p(w) = p_head(c) * softmax( (P_c h) O_c^T )(w)          w in tail cluster c
W_head are the head ids' rows of the token embedding (the head stays tied); P_c (d_c x D) projects to the
cluster's reduced width d_c = D // div^c, O_c (n_c x d_c) scores its ids. With tied tails O_c = E_c U_c: the
cluster's ids' embedding rows E_c (n_c x D) through its own U_c (D x d_c), so a rare id's output vector is its
input vector, trained by both. The p(w) sum to one over all V ids, so -log p(target) is the true
cross-entropy, comparable with a full softmax's; the loss needs only the head softmax and, per token, the
softmax of its target's cluster.""",
    source='Grave et al. 2017, "Efficient softmax approximation for GPUs"',
    persona="ada_lovelace",
)
