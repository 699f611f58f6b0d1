"""adaptive_softmax: the output distribution factorized over frequency clusters (Grave et al. 2017,
"Efficient softmax approximation for GPUs").

The ids are ordered by their train.bin count (dreamteam/clusters.py): a head of the most frequent ids, then
tail clusters c = 1..C, the last holding every id never seen in training. For the final hidden state h:

    p_head = softmax([ h W_head^T ; h W_cluster^T ])        over the head ids and one entry per tail cluster
    p(w) = p_head(w)                                        w in the head
    p(w) = p_head(c) * softmax( (P_c h) O_c^T )(w)          w in tail cluster c

W_head are the head ids' rows of the token embedding (the head stays tied); P_c (d_c x D) projects to the
cluster's reduced width d_c = D // div^c, O_c (n_c x d_c) scores its ids. With tied tails
(adaptive_softmax_tied_tails) O_c = E_c U_c: the cluster's ids' embedding rows E_c (n_c x D) through its own
U_c (D x d_c), so a rare id's output vector is its input vector, trained by both (as the tied head's are). The p(w) sum to one over all V
ids, so -log p(target) is the true cross-entropy, comparable with a full softmax's.

`log_probs` gives log p over all V ids (in id order: GPT.forward's logits); `nll` gives -log p(target) per
token without them (torchport/fast.py's fused_loss): the head softmax over head + C entries, then each tail
cluster's softmax for the tokens whose target lies in it only. The id order (cluster assignment) comes from
the token counts given to the constructor, not from the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.clusters import adaptive_clusters
from dreamteam.config import GPTConfig


def clusters_of(config: GPTConfig, token_counts):
    import numpy as np

    if token_counts is None:
        raise ValueError("adaptive_softmax needs token_counts (the train.bin counts): GPT(config, token_counts)")
    counts = np.asarray(token_counts)
    if counts.shape != (config.vocab_size,):
        raise ValueError(f"token_counts has shape {counts.shape}; expected ({config.vocab_size},)")
    return adaptive_clusters(counts, config.adaptive_softmax_cutoffs, config.n_embd, config.adaptive_softmax_div)


class TailCluster(nn.Module):
    """Scores of a tail cluster's n ids through width d: out(proj(h)); tied: up(proj(h)) against the ids'
    embedding rows wte_nxD (None when untied)."""

    def __init__(self, n_embd: int, n: int, d: int, tied: bool = False):
        super().__init__()
        self.tied = tied
        self.proj = nn.Linear(n_embd, d, bias=False)
        if tied:
            self.up = nn.Linear(d, n_embd, bias=False)
        else:
            self.out = nn.Linear(d, n, bias=False)

    def forward(self, h, wte_nxD):
        if self.tied:
            return self.up(self.proj(h)) @ wte_nxD.t()
        return self.out(self.proj(h))


class AdaptiveSoftmax(nn.Module):
    def __init__(self, config: GPTConfig, token_counts):
        super().__init__()
        cl = clusters_of(config, token_counts)
        self.head_size, self.tail_sizes, self.edges = cl.head_size, cl.tail_sizes, cl.edges
        C = len(cl.tail_sizes)
        self.cluster = nn.Linear(config.n_embd, C, bias=False) if C else None
        tied = config.adaptive_softmax_tied_tails
        self.tail = nn.ModuleList([TailCluster(config.n_embd, n, d, tied) for n, d in zip(cl.tail_sizes, cl.tail_widths)])
        # derived from the counts, rebuilt by the constructor: not part of the state_dict
        self.register_buffer("order", torch.from_numpy(cl.order.copy()), persistent=False)
        self.register_buffer("rank", torch.from_numpy(cl.rank.copy()), persistent=False)
        self.register_buffer("tail_edges", torch.tensor(cl.edges[1:-1], dtype=torch.long), persistent=False)

    def head_log_probs(self, h_NxD, wte_VxD):
        """log softmax over [head ids, tail clusters], (N, head_size + C)."""
        z_NxH = h_NxD @ wte_VxD[self.order[: self.head_size]].t()
        if self.cluster is not None:
            z_NxH = torch.cat([z_NxH, self.cluster(h_NxD)], dim=-1)
        return F.log_softmax(z_NxH, dim=-1)

    def tail_scores(self, c, h_NxD, wte_VxD):
        """Tail cluster c's scores of its ids; the ids' embedding rows are gathered only when tied."""
        t = self.tail[c]
        return t(h_NxD, wte_VxD[self.order[self.edges[c + 1]: self.edges[c + 2]]] if t.tied else None)

    def log_probs(self, h_NxD, wte_VxD):
        """log p(w) for every id w, (N, V), in id order."""
        lh = self.head_log_probs(h_NxD, wte_VxD)
        H = self.head_size
        parts = [lh[:, :H]] + [lh[:, H + c, None] + F.log_softmax(self.tail_scores(c, h_NxD, wte_VxD), dim=-1)
                               for c in range(len(self.tail))]
        return torch.cat(parts, dim=-1)[:, self.rank]  # frequency order -> id order

    def nll(self, h_NxD, wte_VxD, t_N):
        """-log p(t_n) per token, without the N x V log-probabilities; each tail's softmax only for the tokens
        whose target lies in it (a data-dependent selection: on CUDA/MPS a host sync per tail)."""
        lh = self.head_log_probs(h_NxD, wte_VxD)
        H = self.head_size
        pos_N = self.rank[t_N]
        c_N = torch.searchsorted(self.tail_edges, pos_N, right=True)  # 0 head, c >= 1 tail c
        slot_N = torch.where(c_N == 0, pos_N, H + c_N - 1)
        lp_N = torch.gather(lh, 1, slot_N[:, None])[:, 0]
        for c in range(len(self.tail)):
            rows = (c_N == c + 1).nonzero()[:, 0]
            if rows.numel():
                lt = F.log_softmax(self.tail_scores(c, h_NxD[rows], wte_VxD), dim=-1)
                lp_N = lp_N.index_add(0, rows, torch.gather(lt, 1, (pos_N[rows] - self.edges[c + 1])[:, None])[:, 0])
        return -lp_N
