"""adaptive_softmax in torch: the frequency-clustered output distribution (clusters from
dreamteam/components/adaptive_softmax.py, which also states the mathematics and source).

`log_probs` gives log p over all V ids (in id order: GPT.forward's logits); `nll_sum` gives the sum of
-log p(target) over the kept tokens without them (torchport/fast.py's fused_loss), in one of two forms of the
same numbers (other rounding only):
  - fixed shapes (CUDA, MPS, any device but the CPU): the head softmax over head + C entries, then every tail
    cluster's cross-entropy for every token through the chunked linear cross-entropy (torchport/fast.py), with
    weight 0 for the tokens whose target lies elsewhere. Every shape follows from N alone: no host sync and
    nothing a CUDA graph could not replay.
  - selection (the CPU, `nll`): each tail's softmax only for the tokens whose target lies in it. Selecting them
    (nonzero) waits for nothing on the CPU, and it computes ~10% of the tail scores: the fixed form made the
    ada_lovelace loss and backward 5.8x slower on the 2-core CPU (the last tail, 39070 ids never seen in
    training, costs as much as the whole 50304-way head of the baseline).
The id order (cluster assignment) comes from the token counts given to the constructor, not from the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.components.adaptive_softmax import adaptive_clusters
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

    def features_and_weights(self, h, wte_nxD):
        """(x, W) with scores = x @ W^T: (up(proj(h)), wte_nxD) tied, (proj(h), out.weight) untied."""
        if self.tied:
            return self.up(self.proj(h)), wte_nxD
        return self.proj(h), self.out.weight


class AdaptiveSoftmax(nn.Module):
    """The head slot filled by adaptive_softmax (GPT.head): logits(h) are the log-probabilities of all V ids.
    wte: the token embedding whose rows score the head's ids (and, tied, the tails'); a reference only, its
    weight stays transformer.wte.weight (= lm_head.weight) in the state_dict."""

    def __init__(self, config: GPTConfig, token_counts, wte: nn.Embedding | None = None):
        super().__init__()
        object.__setattr__(self, "wte", wte)  # not registered: no second copy of the tied matrix in the state_dict
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
        # nll_sum's form: None picks fixed shapes on every device but the CPU; True / False force one (tests)
        self.fixed_shapes: bool | None = None

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

    def nll_sum(self, h_NxD, wte_VxD, t_N, keep_N):
        """sum over the tokens with keep_N of -log p(t_n), without the N x V log-probabilities (t_n is any id where
        keep_N is False). Fixed shapes: the head softmax for every token, and every tail cluster's cross-entropy
        for every token, chunked (torchport/fast.py) with the tokens whose target lies outside it ignored."""
        from torchport.fast import IGNORE_INDEX, linear_cross_entropy

        fixed = self.fixed_shapes if self.fixed_shapes is not None else h_NxD.device.type != "cpu"
        if not fixed:
            return (self.nll(h_NxD, wte_VxD, t_N) * keep_N).sum()
        lh = self.head_log_probs(h_NxD, wte_VxD)
        H = self.head_size
        pos_N = self.rank[t_N]
        c_N = torch.searchsorted(self.tail_edges, pos_N, right=True)  # 0 head, c >= 1 tail c
        slot_N = torch.where(c_N == 0, pos_N, H + c_N - 1)
        total = -(torch.gather(lh, 1, slot_N[:, None])[:, 0] * keep_N).sum()
        for c in range(len(self.tail)):
            t = self.tail[c]
            lo, hi = self.edges[c + 1], self.edges[c + 2]
            x, W = t.features_and_weights(h_NxD, wte_VxD[self.order[lo:hi]] if t.tied else None)
            local_N = torch.where(keep_N & (c_N == c + 1), pos_N - lo, IGNORE_INDEX)
            total = total + linear_cross_entropy(x, W, local_N, reduction="sum")
        return total

    def nll(self, h_NxD, wte_VxD, t_N):
        """-log p(t_n) per token, each tail's softmax only for the tokens whose target lies in it: a data-dependent
        selection, free on the CPU, a host sync per tail on CUDA/MPS (nll_sum uses it on the CPU only)."""
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

    def logits(self, h_BxTxD, E=None):
        """log p(w) for every id, (B, T, V): the normalized log-probabilities stand where a head's logits do.
        E: the token embedding rows the head and tied tails score with (None: wte's own)."""
        lp_NxV = self.log_probs(h_BxTxD.reshape(-1, h_BxTxD.size(-1)), self.wte.weight if E is None else E)
        return lp_NxV.view(*h_BxTxD.shape[:2], -1)

    def cross_entropy(self, logits_BxTxV, targets_BxT):
        """Mean -log p(target) over the targets that are not -1."""
        return F.nll_loss(logits_BxTxV.view(-1, logits_BxTxV.size(-1)), targets_BxT.reshape(-1), ignore_index=-1)

    def loss(self, h_BxTxD, targets_BxT, E=None):
        return self.cross_entropy(self.logits(h_BxTxD, E), targets_BxT)

    def fused_loss(self, h_NxD, targets_N, chunk=None, smoothing_eps: float = 0.0, prior=None, z_loss: float = 0.0,
                   E=None):
        """The same mean -log p(target) through nll_sum, without the N x V log-probabilities (torchport/fast.py)."""
        from torchport.fast import IGNORE_INDEX

        if smoothing_eps or z_loss:
            raise ValueError("adaptive_softmax has no smoothed loss or z-loss (succession_objective needs the tied "
                             "head)")
        keep_N = targets_N != IGNORE_INDEX
        total = self.nll_sum(h_NxD, self.wte.weight if E is None else E, torch.where(keep_N, targets_N, 0), keep_N)
        return total / keep_N.sum()


# what adaptive_softmax fills in the torch GPT (torchport/model.py): a head of its own beside the tied lm_head
FILLS = {"head": AdaptiveSoftmax}
