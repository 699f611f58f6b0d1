"""Drawings of a model's anatomy from numpy arrays (framework-neutral; matplotlib imported on use). A component's
own drawings are beside it (torchport/laplace_bias_rates.py, torchport/moe_mlp_load.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_attention(attention_LxHxTxT: np.ndarray, tokens: list[str], path: Path, title: str) -> Path:
    """One heat map per layer (rows) and head (columns): row i is where query token i looks."""
    plt = _pyplot()
    L, H, T, _ = attention_LxHxTxT.shape
    fig, axes = plt.subplots(L, H, figsize=(2.6 * H + 1, 2.6 * L + 1), squeeze=False)
    labels = [t.replace("\n", "\\n") for t in tokens]
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            ax.imshow(attention_LxHxTxT[l, h], cmap="magma", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {l}, head {h}", fontsize=8)
            ticks = range(T) if T <= 24 else range(0, T, max(1, T // 12))
            ax.set_xticks(list(ticks), [labels[i] for i in ticks], rotation=90, fontsize=5)
            ax.set_yticks(list(ticks), [labels[i] for i in ticks], fontsize=5)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_logit_lens(lens_logits_LxTxV: np.ndarray, tokens: list[str], decode, path: Path, title: str) -> Path:
    """A table: after each layer (rows), the top token read at each position (columns), shaded by its
    probability; the last row is the model's own prediction of the next token."""
    plt = _pyplot()
    logits = lens_logits_LxTxV - lens_logits_LxTxV.max(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    top = probs.argmax(-1)
    top_p = probs.max(-1)
    L1, T = top.shape
    fig, ax = plt.subplots(figsize=(1.1 * T + 2, 0.6 * L1 + 1.5))
    ax.imshow(top_p, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for r in range(L1):
        for t in range(T):
            ax.text(t, r, repr(decode([int(top[r, t])]))[1:-1], ha="center", va="center", fontsize=7)
    ax.set_yticks(range(L1), ["embedding"] + [f"after block {i}" for i in range(L1 - 1)])
    ax.set_xticks(range(T), [t.replace("\n", "\\n") for t in tokens], rotation=90, fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
