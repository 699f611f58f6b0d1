"""memory_tape in torch: attention over learned persistent key and value slots and the causal context, in one
softmax. The tape is concatenated in front of the context keys and values, and scaled_dot_product_attention gets
the boolean mask [ones(T, M) | tril(T, T)].

The mathematics and source: the declaration, dreamteam/components/memory_tape.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F


def tape_mask(T: int, M: int, device=None) -> torch.Tensor:
    """(T, M + T) boolean: every query sees the whole tape and its causal context."""
    return torch.cat([torch.ones(T, M, dtype=torch.bool, device=device),
                      torch.ones(T, T, dtype=torch.bool, device=device).tril()], dim=1)


def tape_attention(q, k, v, tape_k, tape_v, dropout_p: float = 0.0):
    """softmax over [tape | causal context] of q . key / sqrt(d), times [tape values | v]; q, k, v (B, H, T, d),
    tape_k, tape_v (H, M, d)."""
    B, H, T, _ = q.shape
    M = tape_k.shape[1]
    k_all = torch.cat([tape_k.unsqueeze(0).expand(B, H, M, -1), k], dim=2)
    v_all = torch.cat([tape_v.unsqueeze(0).expand(B, H, M, -1), v], dim=2)
    return F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=tape_mask(T, M, q.device), dropout_p=dropout_p)


def tape_attention_weights(q, k, tape_k):
    """(B, H, T, M + T): the weights tape_attention uses, explicitly (tests, anatomy)."""
    B, H, T, K = q.shape
    M = tape_k.shape[1]
    s = torch.cat([q @ tape_k.unsqueeze(0).transpose(-1, -2), q @ k.transpose(-1, -2)], dim=-1) / math.sqrt(K)
    return s.masked_fill(~tape_mask(T, M, q.device), float("-inf")).softmax(-1)


class MemoryTape:
    """The extra_kv slot filled by memory_tape: M key and value slots per head, the attention's own parameters
    attn.tape_k and attn.tape_v (H, M, d), drawn N(0, 0.02) when the attention is built."""

    def __init__(self, attn: nn.Module, config):
        shape = (config.n_head, config.memory_tape_slots, config.head_dim)
        attn.tape_k = nn.Parameter(torch.randn(shape) * 0.02)
        attn.tape_v = nn.Parameter(torch.randn(shape) * 0.02)

    def __call__(self, attn):
        return attn.tape_k, attn.tape_v


# what memory_tape fills in the torch GPT (torchport/model.py)
FILLS = {"extra_kv": MemoryTape}
