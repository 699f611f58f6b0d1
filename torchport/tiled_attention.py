"""tiled_attention in torch: the explicit loop over key blocks with the online softmax, the reference.

The model itself calls `F.scaled_dot_product_attention(..., is_causal=True)`, which on CUDA and MPS dispatches
to fused kernels that run this same algorithm and on the CPU computes the same numbers; this loop is what
tests/test_tiled_attention.py compares it with (and why the file stays).
The mathematics and sources: the declaration, dreamteam/components/tiled_attention.py.
"""

from __future__ import annotations

import math

import torch

from torchport.model import attend


def tiled_attention(q, k, v, block: int = 16):
    """Causal softmax(q k^T / sqrt(E)) v for q, k (B, H, T, E) and v (B, H, T, F), by blocks of `block`."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    T, E = q.shape[-2:]
    q = q / math.sqrt(E)
    out = []
    for i0 in range(0, T, block):  # query block [i0, i1)
        i1 = min(i0 + block, T)
        qi = q[..., i0:i1, :]
        m = qi.new_full(qi.shape[:-1], float("-inf"))
        l = qi.new_zeros(qi.shape[:-1])
        acc = qi.new_zeros(qi.shape[:-1] + v.shape[-1:])
        for j0 in range(0, i1, block):  # key blocks after the query block are all in the future: skipped
            j1 = min(j0 + block, T)
            s = qi @ k[..., j0:j1, :].transpose(-1, -2)
            visible = torch.arange(j0, j1, device=q.device)[None, :] <= torch.arange(i0, i1, device=q.device)[:, None]
            s = s.masked_fill(~visible, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            p = torch.exp(s - m_new[..., None])
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(-1)
            acc = alpha[..., None] * acc + p @ v[..., j0:j1, :]
            m = m_new
        out.append(acc / l[..., None])
    return torch.cat(out, dim=-2)


def naive_attention(q, k, v):
    """The reference: the full T x T causal softmax, then the weighted sum of values."""
    T, E = q.shape[-2:]
    s = q @ k.transpose(-1, -2) / math.sqrt(E)
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return s.softmax(-1) @ v


# what tiled_attention fills in the torch GPT (torchport/model.py): the model's own attend, whose
# scaled_dot_product_attention already runs this algorithm (the module docstring)
FILLS = {"attend": attend}
