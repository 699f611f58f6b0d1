"""rope in torch: the rotation of queries and keys by position (no parameters).

The mathematics and source: the declaration, dreamteam/components/rope.py.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=None)
def inverse_frequencies(rotary_dim: int, base: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """base^(-2i / rotary_dim), (rotary_dim / 2,): computed in float64 on the host, rounded once to dtype, and
    uploaded once per (dtype, device), so that a training step copies nothing to the device (on MPS, which has no
    float64, the rounding happens on the host)."""
    inv_freq = torch.from_numpy(base ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim))
    with torch.inference_mode(False):  # a normal tensor even when first made under inference_mode
        return inv_freq.to(dtype).to(device)


def rope_angles(positions, rotary_dim: int, base: float, dtype):
    """theta[p, i] = p * base^(-2i / rotary_dim), shape (T, rotary_dim / 2), in dtype."""
    inv_freq = inverse_frequencies(rotary_dim, float(base), dtype, positions.device)
    return positions.to(dtype)[:, None] * inv_freq[None, :]


def apply_rope(x, positions, rotary_dim: int, base: float = 10000.0):
    """Rotate the first rotary_dim coordinates of x (B, H, T, K) by the angles of positions (T,)."""
    theta = rope_angles(positions, rotary_dim, base, x.dtype)
    cos, sin = theta.cos(), theta.sin()
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    pairs = rot.unflatten(-1, (rotary_dim // 2, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    return torch.cat([rotated, rest], dim=-1)


class Rotary:
    """The qk_transform of rope: queries and keys rotated by their positions, on the attention's first
    attn.rotary_dim coordinates of each head. No parameters."""

    def __init__(self, attn, config):
        self.rotary_dim, self.base = attn.rotary_dim, config.rope_base

    def __call__(self, attn, q, k, pos):
        return apply_rope(q, pos, self.rotary_dim, self.base), apply_rope(k, pos, self.rotary_dim, self.base)

    def keys_without_position(self, attn, k):
        """Keys that have no position (memory_tape's) are not rotated."""
        return k


# what rope fills in the torch GPT (torchport/model.py)
FILLS = {"qk_transform": Rotary}
