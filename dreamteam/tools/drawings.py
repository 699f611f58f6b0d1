"""Drawings of a model's anatomy from numpy arrays (framework-neutral; matplotlib imported on use)."""

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


def laplace_rates_of(checkpoint) -> np.ndarray:
    """The learned decay rates s = softplus(laplace_rate) of a laplace_bias checkpoint, (layers, heads).

    Reads a safetensors file of either engine: torch keys `transformer.h.<l>.attn.laplace_rate` (train_mps),
    Flax keys `transformer/h_<l>/attn/laplace_rate` (jaxmodel.train)."""
    import re

    from safetensors.numpy import load_file

    tensors = load_file(str(checkpoint))
    pattern = re.compile(r"^transformer[./]h[._](\d+)[./]attn[./]laplace_rate$")
    layers = {int(m.group(1)): v for k, v in tensors.items() if (m := pattern.match(k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise ValueError(f"{checkpoint}: no laplace_rate of every layer (is laplace_bias on in this model?)")
    rate_LxH = np.stack([np.asarray(layers[l], dtype=np.float64) for l in range(len(layers))])
    return np.logaddexp(rate_LxH, 0.0)  # softplus


def draw_laplace_rates(rates_LxH: np.ndarray, path: Path, title: str, initial_H: np.ndarray | None = None) -> Path:
    """The decay rates s_h of laplace_bias, one group of bars per layer, one bar per head, on a log scale,
    with the initial (ALiBi) rates as dashed lines; the right axis reads the half-life ln 2 / s in tokens."""
    plt = _pyplot()
    L, H = rates_LxH.shape
    fig, ax = plt.subplots(figsize=(1.6 * L + 3, 4))
    width = 0.8 / H
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, H))
    for h in range(H):
        ax.bar(np.arange(L) + (h - (H - 1) / 2) * width, rates_LxH[:, h], width, color=colors[h], label=f"head {h}")
        if initial_H is not None:
            ax.axhline(initial_H[h], color=colors[h], linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(L), [f"layer {l}" for l in range(L)])
    ax.set_ylabel("decay rate s_h = softplus(laplace_rate)")
    right = ax.secondary_yaxis("right", functions=(lambda s: np.log(2) / np.maximum(s, 1e-12), lambda t: np.log(2) / np.maximum(t, 1e-12)))
    right.set_ylabel("half-life ln 2 / s_h (tokens)")
    ax.legend(fontsize=7, ncol=H, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.set_title(title + ("\n(dashed: the initial ALiBi rates)" if initial_H is not None else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_expert_load(expert_load: list[dict], path: Path, title: str) -> Path:
    """moe_mlp load over training, one panel per layer: each expert's share of the routed (token, slot)
    selections in each interval between checkpoints (the run record's `expert_load`), 1/E dashed."""
    if not expert_load:
        raise ValueError("no expert loads to draw: the run record has no `expert_load` (was moe_mlp on?)")
    plt = _pyplot()
    its = [e["it"] for e in expert_load]
    layers = list(expert_load[0]["load"])
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers) + 1, 3.4), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        load_NxE = np.array([e["load"][layer] for e in expert_load], dtype=np.float64)
        share_NxE = load_NxE / load_NxE.sum(1, keepdims=True)
        E = share_NxE.shape[1]
        for e in range(E):
            ax.plot(its, share_NxE[:, e], marker="o", ms=3, lw=1, label=f"expert {e}")
        ax.axhline(1.0 / E, color="k", ls="--", lw=0.8)
        ax.set_title(layer.replace("transformer.", "").replace(".mlp", ""), fontsize=9)
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("share of routed tokens")
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
