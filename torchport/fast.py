"""A fast, exact training loss for the torch GPT: the tied output head and its cross-entropy, fused and chunked.

The eager reference (torchport.model.GPT.forward) computes, over the N = B*T tokens whose target is not -1,

    z_NxV = h_NxD @ W_VxD^T,   loss = (1/N) sum_n [ lse_n - z[n, t_n] ],   lse_n = log sum_v exp(z[n, v])
    d loss / d z = (P - Y) / N,   P = softmax(z) row-wise,  Y = onehot(t)
    d loss / d h = (P - Y) @ W / N,   d loss / d W = (P - Y)^T @ h / N

materializing z (and in autograd its log-softmax and gradient): with N = 8*64 and V = 50304 that is 103 MB of
float32 per tensor, several per step, which dominates a CPU step (and its page faults).
`LinearCrossEntropy` computes the same numbers chunk by chunk of C tokens, with one C x V buffer reused:

    for each chunk c:   z = h_c @ W^T;  m = max_v z;  E = exp(z - m);  s = sum_v E;  lse_c = m + log s
                        (only if gradients are wanted)   G_h[c] = (E @ W) / s,   G_W += E^T @ (h_c / s)
    then                G_h -= W[t];  G_W[t_n] -= h_n (scatter-add);   loss = mean_n (lse_n - z[n, t_n])
    backward:           grad_h = G_h * g / N,   grad_W = G_W * g / N      (g the incoming gradient of the loss)

i.e. P = E / s and the onehot Y are applied to the small products (C x D, V x D) instead of the C x V chunk,
and the gradients are formed in the forward pass, while the chunk's logits are at hand (as Liger-Kernel's
fused linear cross-entropy does; the chunking idea is also that of Cut Cross-Entropy, Wijmans et al. 2024):
per token one exp and three N x D x V matmuls instead of the reference's recomputed softmax and 103 MB
temporaries. Saved for backward: G_h (N x D) and G_W (V x D), never anything of size N x V. Same mathematics
as F.cross_entropy(h @ W.T, t, ignore_index=-1), other rounding only (float64: ~1e-16 apart).

With an output bias b (the good_turing_prior component's lm_head.bias), z = h @ W^T + b and
    d loss / d b = sum_n (P_n - Y_n) / N,   accumulated per chunk as G_b += E^T (w / s), then G_b[t_n] -= w_n.

`fused_loss(model, idx, targets)` is the fast equal of `model(idx, targets)[1]` for torchport.model.GPT.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

IGNORE_INDEX = -1
# Tokens per chunk, measured with benchmarks/bench_step.py (whole baseline train step, N = 512, D = 32,
# V = 50304, torch 2.13, 2 threads). On a 2-core AMD EPYC VM (L2 1 MiB per core): chunks of 24 to 48 tokens
# fastest and equal within noise, 16 and 64 to 128 a few per cent slower, 256 ~30% slower. On a 2-core Intel
# Xeon with AVX-512 (L2 4 MiB per core): 40 to 128 equal within noise, 32 3% and 16 20% slower, 256 50% slower.
# 48 tokens (a 9.7 MB float32 chunk) is among the fastest on both. Not tuned for CUDA or MPS.
DEFAULT_CHUNK = 48


def _check_inputs(h_NxD, W_VxD, targets_N, chunk, b_V=None):
    if not (isinstance(h_NxD, torch.Tensor) and isinstance(W_VxD, torch.Tensor) and isinstance(targets_N, torch.Tensor)):
        raise TypeError("h, W and targets must be torch tensors")
    if h_NxD.dim() != 2 or W_VxD.dim() != 2 or h_NxD.shape[1] != W_VxD.shape[1]:
        raise ValueError(f"h must be (N, D) and W (V, D) with the same D; got h {tuple(h_NxD.shape)}, W {tuple(W_VxD.shape)}")
    if targets_N.shape != h_NxD.shape[:1]:
        raise ValueError(f"targets must have shape ({h_NxD.shape[0]},), one per row of h; got {tuple(targets_N.shape)}")
    if targets_N.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"targets must be integer token ids; got dtype {targets_N.dtype}")
    if h_NxD.dtype != W_VxD.dtype or not h_NxD.dtype.is_floating_point:
        raise ValueError(f"h and W must share one floating dtype; got {h_NxD.dtype} and {W_VxD.dtype}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (tokens per chunk); got {chunk!r}")
    if b_V is not None and (not isinstance(b_V, torch.Tensor) or b_V.shape != W_VxD.shape[:1] or b_V.dtype != W_VxD.dtype):
        raise ValueError(f"bias must be a tensor of shape ({W_VxD.shape[0]},) and W's dtype; got "
                         f"{tuple(b_V.shape) if isinstance(b_V, torch.Tensor) else type(b_V).__name__}")


def _prepare_targets(targets_N, V, device):
    """(t_N, w_N): targets with the ignored ones (-1) replaced by 0, and weights 1.0 (kept) / 0.0 (ignored).

    Masks rather than a selection of the kept tokens, so that no step waits for the device (CUDA, MPS);
    multiplying by 1.0 is exact, so a batch without ignored tokens gets the unmasked numbers.
    """
    t_N = targets_N.long()
    keep_N = t_N != IGNORE_INDEX
    if device.type == "cpu" and t_N.numel():
        # the check needs the values: on the CPU a numpy view of them reads memory without a torch op (nothing to
        # wait for); on CUDA/MPS it would be a host sync per step, so there an out-of-range id is not checked here
        t = t_N.detach().numpy()
        bad = (t != IGNORE_INDEX) & ((t < 0) | (t >= V))
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise ValueError(f"targets[{i}] = {int(t[i])}; expected a token id in [0, {V}) or {IGNORE_INDEX} (ignored)")
    return torch.where(keep_N, t_N, 0), keep_N


def _chunked(h_NxD, W_VxD, t_N, keep_N, chunk: int, need_h: bool, need_W: bool, b_V=None, need_b: bool = False,
             smoothing_eps: float = 0.0, prior_V=None, z_loss: float = 0.0, row_weight=None):
    """(sum_n w_n loss_n, G_h or None, G_W or None, G_b or None), chunk by chunk (module docstring);
    w_n = 1 for kept tokens, 0 for ignored ones (their rows of G_h are 0 and they add nothing to G_W, G_b).
    b_V: the output bias or None (z = h W^T + b).

    With smoothing_eps = e (and prior_V = pi) and z_loss = a, the per-token loss is succession_objective's
        (1 - e)(lse - z_t) + e sum_v pi_v (lse - z_v) + a lse^2 = (1 + a lse) lse - (1 - e) z_t - e pi . z
    of gradient in z: (1 + 2 a lse) P - (1 - e) Y - e pi. The factor (1 + 2 a lse_n) scales row n of P in the
    chunk (lse_n is at hand there); the pi terms are rank one: pi . z = h . (W^T pi) + pi . b, so - e (W^T pi)
    per row of G_h, - e pi (sum_n h_n)^T in G_W, - e pi (sum_n w_n) in G_b. With e = a = 0 no extra operation runs.

    row_weight(a, b, lse_c, zt_c) -> r_c: per-token factors of the gradients of rows a:b, computed once the chunk's
    lse and target logits are known (ngram_memory's mixture: the model's responsibility for the target,
    torchport/ngram_memory.py); w_n becomes w_n r_n, so the returned sum is then sum_n w_n r_n loss_n."""
    N, V = h_NxD.shape[0], W_VxD.shape[0]
    w_N = keep_N.to(h_NxD.dtype)
    m_N = h_NxD.new_empty(N)
    s_N = h_NxD.new_empty(N)
    zt_N = h_NxD.new_empty(N)
    G_h = h_NxD.new_empty(h_NxD.shape) if need_h else None
    G_W = torch.empty_like(W_VxD) if need_W else None
    G_b = W_VxD.new_zeros(V) if need_b else None
    if N == 0:
        if need_W:
            G_W.zero_()
        return h_NxD.new_zeros(()), G_h, G_W, G_b
    buf_CxV = h_NxD.new_empty(min(chunk, N), V)
    W_T = W_VxD.t()
    for a in range(0, N, chunk):
        b = min(a + chunk, N)
        z = buf_CxV[: b - a]
        h_c = h_NxD[a:b]
        if b_V is None:
            torch.mm(h_c, W_T, out=z)  # logits of the chunk
        else:
            torch.addmm(b_V, h_c, W_T, out=z)  # logits of the chunk, with the output bias
        torch.gather(z, 1, t_N[a:b, None], out=zt_N[a:b, None])  # target logits
        m = torch.amax(z, 1, keepdim=True, out=m_N[a:b, None])
        z.sub_(m).exp_()  # E = exp(z - m)
        s = torch.sum(z, 1, keepdim=True, out=s_N[a:b, None])
        if row_weight is not None:
            w_N[a:b].mul_(row_weight(a, b, m[:, 0] + torch.log(s[:, 0]), zt_N[a:b]))
        w_over_s = w_N[a:b, None] / s
        if z_loss:  # d(a lse^2)/dz = 2 a lse P: P's rows scaled by 1 + 2 a lse
            w_over_s = w_over_s * (1.0 + 2.0 * z_loss * (m + torch.log(s)))
        if need_h:
            torch.mm(z, W_VxD, out=G_h[a:b]).mul_(w_over_s)  # rows of P @ W
        if need_W:
            if a == 0:
                torch.mm(z.t(), h_c * w_over_s, out=G_W)  # P^T @ h, first chunk
            else:
                G_W.addmm_(z.t(), h_c * w_over_s)
        if need_b:
            G_b.addmv_(z.t(), w_over_s[:, 0])  # column sums of P
    lse_N = m_N + torch.log(s_N)
    if not (smoothing_eps or z_loss):
        if need_b:
            G_b.index_add_(0, t_N, w_N, alpha=-1)  # - column sums of Y
        if need_h:
            G_h.sub_(W_VxD[t_N] * w_N[:, None])  # - Y @ W
        if need_W:
            G_W.index_add_(0, t_N, h_NxD * w_N[:, None], alpha=-1)  # - Y^T @ h
        return ((lse_N - zt_N) * w_N).sum(), G_h, G_W, G_b
    e = float(smoothing_eps)
    loss_N = lse_N - (1.0 - e) * zt_N + z_loss * lse_N * lse_N
    if need_b:
        G_b.index_add_(0, t_N, w_N, alpha=-(1.0 - e))  # - (1 - e) column sums of Y
    if need_h:
        G_h.sub_(W_VxD[t_N] * (w_N * (1.0 - e))[:, None])  # - (1 - e) Y @ W
    if need_W:
        G_W.index_add_(0, t_N, h_NxD * w_N[:, None], alpha=-(1.0 - e))  # - (1 - e) Y^T @ h
    if e:
        if prior_V is None:
            raise ValueError("smoothing_eps > 0 needs the prior (a (V,) tensor of probabilities)")
        pi_V = prior_V.to(W_VxD.dtype)
        Wpi_D = pi_V @ W_VxD  # W^T pi
        loss_N = loss_N - e * (h_NxD @ Wpi_D)  # sum_v pi_v z_v = h . (W^T pi) (+ pi . b below)
        if b_V is not None:
            loss_N = loss_N - e * (pi_V @ b_V)
        if need_h:
            G_h.sub_(e * w_N[:, None] * Wpi_D)  # - e pi @ W per row
        if need_W:
            G_W.sub_(e * torch.outer(pi_V, (h_NxD * w_N[:, None]).sum(0)))  # - e pi^T (sum_n h_n)
        if need_b:
            G_b.sub_(e * w_N.sum() * pi_V)  # - e pi per kept token
    return (loss_N * w_N).sum(), G_h, G_W, G_b


class LinearCrossEntropy(torch.autograd.Function):
    """mean_n CE(h_n @ W^T (+ b), t_n) over the tokens with t_n != -1, without materializing the N x V logits.

    Equal to F.cross_entropy(h_NxD @ W_VxD.T (+ b_V), targets_N, ignore_index=-1) (module docstring for the math).
    The gradients are computed in the forward pass; call it through `linear_cross_entropy`, which skips them
    where no gradient is wanted (under torch.no_grad, or when neither h nor W requires grad).
    """

    @staticmethod
    def forward(ctx, h_NxD, W_VxD, targets_N, chunk=DEFAULT_CHUNK, b_V=None, smoothing_eps=0.0, prior_V=None,
                z_loss=0.0, reduction="mean"):
        _check_inputs(h_NxD, W_VxD, targets_N, chunk, b_V)
        t_N, keep_N = _prepare_targets(targets_N, W_VxD.shape[0], h_NxD.device)
        need_h, need_W = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = b_V is not None and ctx.needs_input_grad[4]
        total, G_h, G_W, G_b = _chunked(h_NxD.contiguous(), W_VxD.contiguous(), t_N, keep_N, chunk, need_h, need_W,
                                        None if b_V is None else b_V.contiguous(), need_b, smoothing_eps, prior_V, z_loss)
        if reduction == "sum":  # the sum over kept tokens (0 without any): adaptive_softmax's tail clusters
            ctx.save_for_backward(G_h, G_W, G_b, None)
            return total
        count = keep_N.sum().to(total.dtype)
        ctx.save_for_backward(G_h, G_W, G_b, count)
        return total / count  # no kept token: 0/0 = nan, as F.cross_entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        G_h, G_W, G_b, count = ctx.saved_tensors
        # no kept token: G_h, G_W are 0, as F.cross_entropy's gradients
        scale = grad_loss if count is None else grad_loss / count.clamp(min=1)
        grad_h = G_h * scale if ctx.needs_input_grad[0] else None
        grad_W = G_W * scale if ctx.needs_input_grad[1] else None
        grad_b = G_b * scale if G_b is not None else None
        return grad_h, grad_W, None, None, grad_b, None, None, None, None


def linear_cross_entropy(h_NxD, W_VxD, targets_N, chunk: int = DEFAULT_CHUNK, bias=None, smoothing_eps: float = 0.0,
                         prior=None, z_loss: float = 0.0, reduction: str = "mean"):
    """F.cross_entropy(h_NxD @ W_VxD.T (+ bias), targets_N, ignore_index=-1, reduction=reduction), computed chunk
    by chunk of tokens; reduction 'mean' or 'sum' (over the kept tokens).
    smoothing_eps, prior, z_loss: succession_objective's loss instead (targets (1 - eps) onehot + eps prior,
    plus z_loss (log Z)^2; torchport/succession_objective.py is its eager reference)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    extra = (smoothing_eps, prior, z_loss)
    if torch.is_grad_enabled() and (h_NxD.requires_grad or W_VxD.requires_grad or (bias is not None and bias.requires_grad)):
        return LinearCrossEntropy.apply(h_NxD, W_VxD, targets_N, chunk, bias, *extra, reduction)
    _check_inputs(h_NxD, W_VxD, targets_N, chunk, bias)
    with torch.no_grad():
        t_N, keep_N = _prepare_targets(targets_N, W_VxD.shape[0], h_NxD.device)
        total = _chunked(h_NxD.contiguous(), W_VxD.contiguous(), t_N, keep_N, chunk, False, False,
                         None if bias is None else bias.contiguous(), False, *extra)[0]
    return total if reduction == "sum" else total / keep_N.sum().to(total.dtype)


def fused_loss(model, idx_BxT, targets_BxT, chunk: int = DEFAULT_CHUNK, smoothing_eps: float = 0.0, prior=None,
               z_loss: float = 0.0):
    """The training loss of torchport.model.GPT, equal to model(idx, targets)[1], without the B x T x V logits:
    the final hidden states model.hidden(idx) through the head's fused loss, model.head.fused_loss. The tied head
    (torchport.model.TiedHead): LinearCrossEntropy with lm_head.weight and its bias lm_head.bias where there is one
    (good_turing_prior). adaptive_softmax: the mean of its per-token -log p(target) through the clusters
    (torchport/adaptive_softmax.py), the same true cross-entropy as the eager path's, never the V-wide output.
    smoothing_eps, prior, z_loss: see linear_cross_entropy (the tied head only). A head_mixture (ngram_memory):
    its -log p_mix(target) through the tied head's operands (torchport/ngram_memory.py)."""
    h_BxTxD, E = model.trunk(idx_BxT)  # E: the input's and the tied head's rows (byte_ngram_embedding composes them)
    if model.head_mixture is not None:
        return model.head_mixture.fused_loss(h_BxTxD, E, model.head.bias, idx_BxT, targets_BxT, chunk)
    return model.head.fused_loss(h_BxTxD.reshape(-1, h_BxTxD.shape[-1]), targets_BxT.reshape(-1), chunk,
                                 smoothing_eps, prior, z_loss, E=E)


def reference_loss(h_NxD, W_VxD, targets_N, bias=None):
    """The eager reference of linear_cross_entropy, as GPT.forward computes it."""
    z = h_NxD @ W_VxD.t() if bias is None else h_NxD @ W_VxD.t() + bias
    return F.cross_entropy(z, targets_N, ignore_index=IGNORE_INDEX)
