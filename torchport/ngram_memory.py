"""ngram_memory: an interpolated Kneser-Ney bigram of train.bin mixed with the model's distribution by a learned gate
per position (Good 1953; Kneser & Ney 1995; Chen & Goodman 1998). The mathematics and the tables are framework-
neutral, in dreamteam/components/ngram_memory.py:

    g = sigmoid(h . w_g + b_g),    p_mix(w) = g softmax(z)_w + (1 - g) p(w | v),    v = the position's input token
    log p_mix(t) = logaddexp(log g + z_t - lse(z), log(1 - g) + log p(t | v))

`NgramMemory(z, h, idx)` is the eager mixture (GPT.forward, the head_mixture slot): the mixture's log-probabilities
over all V ids (the model's logits) from the head's logits z; `nll` gives -log p_mix(target). `fused_loss` is its fast equal for training: only the target's
n-gram probability (one searchsorted lookup), and the tied head's chunked cross-entropy of torchport/fast.py with
each token's gradient scaled by the model's responsibility r = g p_model(t) / p_mix(t), which the chunk knows once
its lse is computed: d loss / dz = r (P - Y), d loss / d(h . w_g + b_g) = g - r. One pass, no B x T x V tensor.
ngram_memory_detach: the same loss value, but d/dz = P - Y (the head trains on its own cross-entropy, not starved
where the n-gram is confident); the gate still learns g - r.

The tables are built once from the float64 counts and kept per (dtype, device): not parameters, not in the
state_dict (only `ngram_memory.gate.weight` and `.bias` are).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.components.ngram_memory import kneser_ney, kneser_ney_trigram, padded_entries
from dreamteam.config import GPTConfig


def _tables(t, dtype, device) -> dict:
    """A Tables (dreamteam/components/ngram_memory.py) as tensors: floats in `dtype` (rounded once from float64)."""
    cols, mass = padded_entries(t)
    f = lambda a: torch.tensor(a, dtype=dtype, device=device)  # noqa: E731
    i = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
    return dict(V=t.vocab_size, keys=i(t.keys), mass=f(t.mass), alpha=f(t.alpha), p_low=f(t.p_low),
                row_ptr=i(t.row_ptr), cols=i(cols), padded_mass=f(mass), j=torch.arange(max(t.max_row, 1), device=device),
                counts=f(t.counts), C=f(t.context_count), N=f(t.context_types), d=t.discount)


def _lookup(T, v_N, t_N):
    """p(t | v) per token by one binary search in the sorted keys v V + w."""
    key_N = v_N * T["V"] + t_N
    k_N = torch.searchsorted(T["keys"], key_N).clamp_(max=T["keys"].numel() - 1)
    stored_N = torch.where(T["keys"][k_N] == key_N, T["mass"][k_N], 0.0)
    return stored_N + T["alpha"][v_N] * T["p_low"][t_N]


def _scatter(out_NxV, row_ptr, cols, mass, j_K, r_N, keep_N=None):
    """out[n, w] += the entries of row r_n (padded gather to the longest row, the padding masked to mass 0, which
    adds exactly nothing; rows where keep_N is False add nothing)."""
    start_N = row_ptr[r_N]
    idx_NxK = start_N[:, None] + j_K[None, :]
    valid_NxK = j_K[None, :] < (row_ptr[r_N + 1] - start_N)[:, None]
    if keep_N is not None:
        valid_NxK = valid_NxK & keep_N[:, None]
    return out_NxV.scatter_add_(1, cols[idx_NxK], torch.where(valid_NxK, mass[idx_NxK], 0.0))


def _rows(T, v_N):
    """p(. | v) per context, (N, V): alpha(v) p_low plus a scatter of v's stored entries."""
    out_NxV = T["alpha"][v_N][:, None] * T["p_low"][None, :]
    return _scatter(out_NxV, T["row_ptr"], T["cols"], T["padded_mass"], T["j"], v_N)


# The held-out estimate of a training position (dreamteam/components/ngram_memory.py, "held-out estimate"): the
# counts without the occurrence being predicted, where they hold it (k >= 1).

def _held_out(k_N, C_N, N_N, d, q_N):
    """(max(k - 1 - d, 0) + d (N - [k = 1]) q) / (C - 1), q where C = 1."""
    held_N = (torch.clamp(k_N - 1 - d, min=0.0) + d * (N_N - (k_N == 1).to(q_N.dtype)) * q_N) / torch.clamp(C_N - 1, min=1.0)
    return torch.where(C_N > 1, held_N, q_N)


def _held_out_rows(S_NxV, t_N, k_N, C_N, N_N, d, q_NxV):
    """The held-out rows (S C - delta [w = t] + d (N - [k = 1]) q) / (C - 1), q where C = 1; delta = 1 where
    k >= 2, 1 - d where k = 1."""
    C1_N = torch.clamp(C_N - 1, min=1.0)
    out_NxV = (S_NxV * C_N[:, None] + (d * (N_N - (k_N == 1).to(q_NxV.dtype)))[:, None] * q_NxV) / C1_N[:, None]
    delta_N = torch.where(k_N >= 2, torch.ones_like(k_N), torch.full_like(k_N, 1.0 - d))
    out_NxV = out_NxV.scatter_add(1, t_N[:, None], (-delta_N / C1_N)[:, None])
    return torch.where((C_N > 1)[:, None], out_NxV, q_NxV)


def _count(T, v_N, t_N):
    """c(v, t) per token (0 where the bigram was never seen)."""
    key_N = v_N * T["V"] + t_N
    k_N = torch.searchsorted(T["keys"], key_N).clamp_(max=T["keys"].numel() - 1)
    return torch.where(T["keys"][k_N] == key_N, T["counts"][k_N], 0.0)


def _lookup_held_out(T, v_N, t_N):
    """p(t | v) with the occurrence (v, t) left out where the counts hold it."""
    k_N = _count(T, v_N, t_N)
    held_N = _held_out(k_N.clamp(min=1), T["C"][v_N], T["N"][v_N], T["d"], T["p_low"][t_N])
    return torch.where(k_N >= 1, held_N, _lookup(T, v_N, t_N))


def _stored(T, v_N, dtype):
    """The stored part of the rows p(. | v): (c(v, w) - d) / c(v) at the seen bigrams, 0 elsewhere, (N, V)."""
    out_NxV = torch.zeros(v_N.numel(), T["V"], dtype=dtype, device=v_N.device)
    return _scatter(out_NxV, T["row_ptr"], T["cols"], T["padded_mass"], T["j"], v_N)


def _rows_held_out(T, v_N, t_N):
    """The rows p(. | v) with the occurrence (v, t) left out where the counts hold it, (N, V)."""
    k_N = _count(T, v_N, t_N)
    q_NxV = T["p_low"][None, :].expand(v_N.numel(), -1)
    held_NxV = _held_out_rows(_stored(T, v_N, q_NxV.dtype), t_N, k_N.clamp(min=1), T["C"][v_N], T["N"][v_N], T["d"], q_NxV)
    return torch.where((k_N >= 1)[:, None], held_NxV, _rows(T, v_N))


class NgramMemory(nn.Module):
    def __init__(self, config: GPTConfig, ngram_stats):
        super().__init__()
        if ngram_stats is None:
            raise ValueError("ngram_memory needs the bigram counts of train.bin: GPT(config, token_counts, ngram_stats="
                             "dreamteam.components.ngram_memory.bigram_stats(train_ids, vocab_size))")
        if ngram_stats.vocab_size != config.vocab_size:
            raise ValueError(f"ngram_stats counts a vocabulary of {ngram_stats.vocab_size}; the model's is {config.vocab_size}")
        self.order = config.ngram_memory_order
        build = kneser_ney if self.order == 2 else kneser_ney_trigram
        self.tables = build(ngram_stats, config.ngram_memory_low)
        self.gate = nn.Linear(config.n_embd, 1, bias=True)
        self.gate_bias = config.ngram_memory_gate_bias
        self.detach = config.ngram_memory_detach
        self._cache: dict = {}

    def init_weights(self):
        """b_g at its configured start (GPT's init draws the weight as every Linear's, the bias 0)."""
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def _tensors(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._cache:
            t = self.tables
            if self.order == 2:
                self._cache[key] = dict(bigram=_tables(t, dtype, device))
            else:
                cols, mass = np.concatenate([t.cols, np.zeros(max(t.max_row, 1), np.int64)]), np.concatenate(
                    [t.mass, np.zeros(max(t.max_row, 1))])
                i = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
                self._cache[key] = dict(
                    bigram=_tables(t.bigram, dtype, device), middle=_tables(t.middle, dtype, device),
                    ctx_keys=i(t.ctx_keys), alpha=torch.tensor(t.alpha, dtype=dtype, device=device), keys=i(t.keys),
                    row_ptr=i(t.row_ptr), cols=i(cols), padded_mass=torch.tensor(mass, dtype=dtype, device=device),
                    j=torch.arange(max(t.max_row, 1), device=device),
                    counts=torch.tensor(t.counts, dtype=dtype, device=device),
                    C=torch.tensor(t.context_count, dtype=dtype, device=device),
                    N=torch.tensor(t.context_types, dtype=dtype, device=device), d=t.discount)
        return self._cache[key]

    def _context(self, T, u_N, v_N):
        """(c, seen): the trigram context index of (u, v) and whether it was seen (u = -1: no second token)."""
        key_N = torch.where(u_N >= 0, u_N, 0) * self.tables.vocab_size + v_N
        c_N = torch.searchsorted(T["ctx_keys"], key_N).clamp_(max=T["ctx_keys"].numel() - 1)
        return c_N, (u_N >= 0) & (T["ctx_keys"][c_N] == key_N)

    def prob(self, u_N, v_N, t_N, dtype, device, held_out: bool = False):
        """p(t | u, v) per token (the bigram: p(t | v)); u = -1 where there is no second token of context.
        held_out: each occurrence (u, v, t) left out of the counts where they hold it (training positions)."""
        T = self._tensors(dtype, device)
        v_N, t_N = v_N.long(), t_N.long()
        bigram = _lookup_held_out if held_out else _lookup
        if self.order == 2:
            return bigram(T["bigram"], v_N, t_N)
        c_N, seen_N = self._context(T, u_N.long(), v_N)
        key_N = c_N * self.tables.vocab_size + t_N  # int64: c V + w can pass 2^32
        k_N = torch.searchsorted(T["keys"], key_N).clamp_(max=T["keys"].numel() - 1)
        found_N = seen_N & (T["keys"][k_N] == key_N)
        stored_N = torch.where(found_N, T["padded_mass"][k_N], 0.0)
        p_mid_N = _lookup(T["middle"], v_N, t_N)
        p3_N = torch.where(seen_N, stored_N + T["alpha"][c_N] * p_mid_N, p_mid_N)
        if held_out:  # the middle order loses the occurrence where it was its trigram's only one (k3 = 1)
            k3_N = torch.where(found_N, T["counts"][k_N], 0.0)
            mid_N = torch.where(k3_N == 1, _lookup_held_out(T["middle"], v_N, t_N), p_mid_N)
            held_N = _held_out(k3_N.clamp(min=1), T["C"][c_N], T["N"][c_N], T["d"], mid_N)
            p3_N = torch.where(k3_N >= 1, held_N, p3_N)
        return torch.where(u_N >= 0, p3_N, bigram(T["bigram"], v_N, t_N))

    def rows(self, u_N, v_N, dtype, device, t_N=None):
        """p(. | u, v) for each context, (N, V); given the targets t_N, with each occurrence (u, v, t) left out
        of the counts where they hold it (training positions; entries of t_N = -1 are not held out)."""
        T = self._tensors(dtype, device)
        v_N = v_N.long()
        if t_N is not None:
            t_N = t_N.long()
            held_N = t_N >= 0
            t_N = torch.where(held_N, t_N, 0)
        if self.order == 2:
            if t_N is None:
                return _rows(T["bigram"], v_N)
            return torch.where(held_N[:, None], _rows_held_out(T["bigram"], v_N, t_N), _rows(T["bigram"], v_N))
        c_N, seen_N = self._context(T, u_N.long(), v_N)
        mid_NxV = _rows(T["middle"], v_N)
        tri_NxV = torch.where(seen_N[:, None], T["alpha"][c_N][:, None] * mid_NxV, mid_NxV)
        tri_NxV = _scatter(tri_NxV, T["row_ptr"], T["cols"], T["padded_mass"], T["j"], c_N, seen_N)
        if t_N is None:
            return torch.where((u_N >= 0)[:, None], tri_NxV, _rows(T["bigram"], v_N))
        key_N = c_N * self.tables.vocab_size + t_N
        k_N = torch.searchsorted(T["keys"], key_N).clamp_(max=T["keys"].numel() - 1)
        k3_N = torch.where(held_N & seen_N & (T["keys"][k_N] == key_N), T["counts"][k_N], 0.0)
        mid_NxV = torch.where((k3_N == 1)[:, None], _rows_held_out(T["middle"], v_N, t_N), mid_NxV)
        S_NxV = _scatter(torch.zeros_like(mid_NxV), T["row_ptr"], T["cols"], T["padded_mass"], T["j"], c_N, seen_N)
        held_NxV = _held_out_rows(S_NxV, t_N, k3_N.clamp(min=1), T["C"][c_N], T["N"][c_N], T["d"], mid_NxV)
        tri_NxV = torch.where((k3_N >= 1)[:, None], held_NxV, tri_NxV)
        bigram_NxV = torch.where(held_N[:, None], _rows_held_out(T["bigram"], v_N, t_N), _rows(T["bigram"], v_N))
        return torch.where((u_N >= 0)[:, None], tri_NxV, bigram_NxV)

    @staticmethod
    def previous(idx_BxT):
        """The token before each input token, -1 at a window's first position (the trigram's u)."""
        return F.pad(idx_BxT[:, :-1], (1, 0), value=-1)

    def forward(self, z_BxTxV, h_BxTxD, idx_BxT, targets_BxT=None):
        """log p_mix over the V ids from the head's logits z and the final hidden states h of the last T positions
        of idx (all of them in training, the last one in generation). targets (training): the memory's rows
        leave each target's own occurrence out of the counts (the held-out estimate)."""
        T = h_BxTxD.shape[1]
        u_BxT, v_BxT = self.previous(idx_BxT)[:, -T:], idx_BxT[:, -T:]
        a_BxT = self.gate(h_BxTxD)[..., 0]
        t_N = None if targets_BxT is None else targets_BxT.reshape(-1)
        p_NxV = self.rows(u_BxT.reshape(-1), v_BxT.reshape(-1), z_BxTxV.dtype, z_BxTxV.device, t_N)
        ls_BxTxV = F.log_softmax(z_BxTxV, -1)
        model_BxTxV = ls_BxTxV.detach() if self.detach else ls_BxTxV
        logp_BxTxV = torch.logaddexp(F.logsigmoid(a_BxT)[..., None] + model_BxTxV,
                                     F.logsigmoid(-a_BxT)[..., None] + torch.log(p_NxV).view(z_BxTxV.shape))
        if self.detach:  # the same values; the head's gradient is its own cross-entropy's (ngram_memory_detach)
            logp_BxTxV = logp_BxTxV + (ls_BxTxV - model_BxTxV)
        return logp_BxTxV

    @staticmethod
    def nll(logp_BxTxV, targets_BxT):
        """-mean log p_mix(target) over the targets that are not -1 (the log-probabilities are normalized)."""
        return F.nll_loss(logp_BxTxV.view(-1, logp_BxTxV.size(-1)), targets_BxT.reshape(-1), ignore_index=-1)

    def fused_loss(self, h_BxTxD, W_VxD, b_V, idx_BxT, targets_BxT, chunk: int):
        """-mean log p_mix(target) without the B x T x V logits or n-gram rows (module docstring); the same number
        as forward's loss. In training mode the memory's estimate is the held-out one (each target's own
        occurrence left out of the counts), as forward's with targets."""
        from torchport.fast import IGNORE_INDEX

        h_NxD = h_BxTxD.reshape(-1, h_BxTxD.shape[-1])
        t_N = targets_BxT.reshape(-1)
        safe_N = torch.where(t_N == IGNORE_INDEX, 0, t_N)
        with torch.no_grad():  # the tables are constants
            lq_N = torch.log(self.prob(self.previous(idx_BxT).reshape(-1), idx_BxT.reshape(-1), safe_N, h_NxD.dtype,
                                       h_NxD.device, held_out=self.training))
        a_N = self.gate(h_NxD)[:, 0]
        return MixtureCrossEntropy.apply(h_NxD, W_VxD, b_V, a_N, lq_N, t_N, chunk, self.detach)


class MixtureCrossEntropy(torch.autograd.Function):
    """mean_n -log(g_n softmax(h_n W^T + b)_{t_n} + (1 - g_n) q_n) over the tokens with t_n != -1, g_n = sigmoid(a_n),
    log q_n = lq_n given; the gradients of h, W, b and a formed in the forward pass (torchport/fast.py's chunks)."""

    @staticmethod
    def forward(ctx, h_NxD, W_VxD, b_V, a_N, lq_N, targets_N, chunk, detach=False):
        from torchport.fast import _check_inputs, _chunked, _prepare_targets

        _check_inputs(h_NxD, W_VxD, targets_N, chunk, b_V)
        t_N, keep_N = _prepare_targets(targets_N, W_VxD.shape[0], h_NxD.device)
        lg_N, l1g_N = F.logsigmoid(a_N), F.logsigmoid(-a_N)  # log g, log(1 - g)
        lmix_N, r_N = torch.empty_like(a_N), torch.empty_like(a_N)

        def responsibility(a, b, lse_c, zt_c):
            x_c = lg_N[a:b] + (zt_c - lse_c)  # log g p_model(t)
            lmix_N[a:b] = torch.logaddexp(x_c, l1g_N[a:b] + lq_N[a:b])
            r_N[a:b] = torch.exp(x_c - lmix_N[a:b])
            return torch.ones_like(x_c) if detach else r_N[a:b]  # detach: the head's own cross-entropy gradient

        need_h, need_W = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = b_V is not None and ctx.needs_input_grad[2]
        _, G_h, G_W, G_b = _chunked(h_NxD.contiguous(), W_VxD.contiguous(), t_N, keep_N, chunk, need_h, need_W,
                                    None if b_V is None else b_V.contiguous(), need_b, row_weight=responsibility)
        w_N = keep_N.to(a_N.dtype)
        count = w_N.sum()
        G_a = (torch.sigmoid(a_N) - r_N) * w_N  # d(-log p_mix)/da = g - r
        ctx.save_for_backward(G_h, G_W, G_b, G_a, count)
        return -(lmix_N * w_N).sum() / count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        G_h, G_W, G_b, G_a, count = ctx.saved_tensors
        scale = grad_loss / count.clamp(min=1)
        grad = lambda G, i: G * scale if G is not None and ctx.needs_input_grad[i] else None  # noqa: E731
        return grad(G_h, 0), grad(G_W, 1), grad(G_b, 2), grad(G_a, 3), None, None, None, None


# what ngram_memory fills in the torch GPT (torchport/model.py): a second distribution mixed with the head's
FILLS = {"head_mixture": NgramMemory}
