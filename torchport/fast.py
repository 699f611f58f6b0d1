"""A fast, exact training loss for the torch GPT: the tied output head and its cross-entropy, fused and chunked.

The eager reference (torchport.model.GPT.forward) computes

    logits_NxV = h_NxD @ W_VxD^T,   loss = (1 / N) * sum_n [ logsumexp_v(logits[n, v]) - logits[n, t_n] ]

materializing logits (and, in autograd, their softmax and gradient): with N = 8 * 64 tokens and V = 50304
that is 103 MB of float32 per tensor, several per step, which dominates a CPU step (and its page faults).
`LinearCrossEntropy` computes the same numbers chunk by chunk of tokens, keeping only one chunk of logits
(C x V) alive at a time, in a buffer reused across chunks:

    forward:  for each chunk c:  z = h_c @ W^T;  lse_c = max(z) + log sum exp(z - max(z));  loss += sum(lse_c - z[t])
    backward: for each chunk c:  P = exp(h_c @ W^T - lse_c) - onehot(t_c)     (= d loss_n / d z, times N)
              grad_h_c = P @ W,   grad_W += P^T @ h_c;   both times grad_output / N at the end

It saves only h, W, the targets and lse (N numbers), recomputing the chunk's logits in backward (one extra
N x D x V matmul), the "chunked / fused linear cross-entropy" of e.g. Liger-Kernel and Apple's Cut
Cross-Entropy (Wijmans et al. 2024), here in plain torch ops. Same mathematics as F.cross_entropy(h @ W.T, t,
ignore_index=-1), different rounding only: float64 agrees to ~1e-15.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

IGNORE_INDEX = -1
DEFAULT_CHUNK = 64  # tokens per chunk; see benchmarks/bench_step.py and the report in the module docstring


def _check_inputs(h_NxD, W_VxD, targets_N, chunk):
    if h_NxD.dim() != 2 or W_VxD.dim() != 2 or h_NxD.shape[1] != W_VxD.shape[1]:
        raise ValueError(f"h must be (N, D) and W (V, D) with the same D; got h {tuple(h_NxD.shape)}, W {tuple(W_VxD.shape)}")
    if targets_N.shape != h_NxD.shape[:1]:
        raise ValueError(f"targets must have shape ({h_NxD.shape[0]},), one per row of h; got {tuple(targets_N.shape)}")
    if targets_N.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer token ids; got dtype {targets_N.dtype}")
    if h_NxD.dtype != W_VxD.dtype or not h_NxD.dtype.is_floating_point:
        raise ValueError(f"h and W must share one floating dtype; got {h_NxD.dtype} and {W_VxD.dtype}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive number of tokens; got {chunk}")


class LinearCrossEntropy(torch.autograd.Function):
    """mean_n CE(h_n @ W^T, t_n), tokens with t_n == -1 ignored (not counted), without materializing logits."""

    @staticmethod
    def forward(ctx, h_NxD, W_VxD, targets_N, chunk=DEFAULT_CHUNK):
        _check_inputs(h_NxD, W_VxD, targets_N, chunk)
        chunk = int(chunk)
        targets_N = targets_N.long()
        n_all = h_NxD.shape[0]
        valid_N = targets_N != IGNORE_INDEX
        all_valid = bool(valid_N.all())
        if all_valid:
            h, t = h_NxD.contiguous(), targets_N
        else:  # ignored tokens contribute nothing: drop them up front
            h, t = h_NxD[valid_N].contiguous(), targets_N[valid_N]
        N, V = h.shape[0], W_VxD.shape[0]
        if N and (int(t.min()) < 0 or int(t.max()) >= V):
            raise ValueError(f"targets must lie in [0, {V}) or equal {IGNORE_INDEX}")
        W_T = W_VxD.t()
        lse_N = h.new_empty(N)
        tlogit_N = h.new_empty(N)
        buf = h.new_empty(min(chunk, max(N, 1)), V)
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            z = buf[: e - s]
            torch.mm(h[s:e], W_T, out=z)
            tlogit_N[s:e] = z.gather(1, t[s:e, None]).squeeze(1)
            m = z.amax(dim=1, keepdim=True)
            z.sub_(m).exp_()
            lse_N[s:e] = torch.log(z.sum(dim=1)) + m.squeeze(1)
        loss = (lse_N - tlogit_N).sum() / N if N else h.new_full((), float("nan"))
        ctx.save_for_backward(h, W_VxD, t, lse_N, valid_N)
        ctx.chunk, ctx.all_valid, ctx.n_all = chunk, all_valid, n_all
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        h, W_VxD, t, lse_N, valid_N = ctx.saved_tensors
        chunk = ctx.chunk
        N, V = h.shape[0], W_VxD.shape[0]
        need_h, need_W = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = h.new_empty(h.shape) if need_h else None
        grad_W = torch.zeros_like(W_VxD) if need_W else None
        if N:
            W_T = W_VxD.t()
            buf = h.new_empty(min(chunk, N), V)
            rows = torch.arange(min(chunk, N), device=h.device)
            for s in range(0, N, chunk):
                e = min(s + chunk, N)
                p = buf[: e - s]
                torch.mm(h[s:e], W_T, out=p)
                p.sub_(lse_N[s:e, None]).exp_()  # softmax
                p[rows[: e - s], t[s:e]] -= 1.0  # softmax - onehot
                if need_h:
                    torch.mm(p, W_VxD, out=grad_h[s:e])
                if need_W:
                    grad_W.addmm_(p.t(), h[s:e])
            scale = grad_loss / N
            if need_h:
                grad_h.mul_(scale)
            if need_W:
                grad_W.mul_(scale)
        elif need_h:
            grad_h.zero_()
        if need_h and not ctx.all_valid:
            full = grad_h.new_zeros(ctx.n_all, h.shape[1])
            full[valid_N] = grad_h
            grad_h = full
        return grad_h, grad_W, None, None


def linear_cross_entropy(h_NxD, W_VxD, targets_N, chunk: int = DEFAULT_CHUNK):
    """F.cross_entropy(h_NxD @ W_VxD.T, targets_N, ignore_index=-1), computed chunk by chunk."""
    return LinearCrossEntropy.apply(h_NxD, W_VxD, targets_N, chunk)


def fused_loss(model, idx_BxT, targets_BxT, chunk: int = DEFAULT_CHUNK):
    """The training loss of torchport.model.GPT, equal to model(idx, targets)[1] but without the logits."""
    h_BxTxD = model.hidden(idx_BxT)
    return linear_cross_entropy(h_BxTxD.reshape(-1, h_BxTxD.shape[-1]), model.lm_head.weight, targets_BxT.reshape(-1), chunk)


def reference_loss(h_NxD, W_VxD, targets_N):
    """The eager reference of linear_cross_entropy."""
    return F.cross_entropy(h_NxD @ W_VxD.t(), targets_N, ignore_index=IGNORE_INDEX)
