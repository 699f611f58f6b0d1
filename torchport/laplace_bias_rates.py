"""`dreamteam laplace-rates`, laplace_bias's command: the learned decay rates s_h of every layer and head of
a checkpoint of either engine, printed and drawn. The command line (dreamteam/tools/cli.py) checks the
arguments and calls `laplace_rates_command`; reading and drawing need numpy, safetensors and matplotlib, no torch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dreamteam.arguments import CommandError


def laplace_rates_of(checkpoint) -> np.ndarray:
    """The learned decay rates s = softplus(laplace_rate) of a laplace_bias checkpoint, (layers, heads).

    Reads a safetensors file of either engine: torch keys `transformer.h.<l>.attn.laplace_rate` (train_mps),
    Flax keys `transformer/h_<l>/attn/laplace_rate` (jaxmodel.train)."""
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
    import matplotlib

    matplotlib.use("Agg")  # files only, on machines without a display
    import matplotlib.pyplot as plt

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


def laplace_rates_command(args) -> int:
    """args: checkpoint (a .safetensors file), out (None: CHECKPOINT_laplace_rates.png beside it)."""
    from dreamteam.config import GPTConfig
    from dreamteam.components.laplace_bias import initial_rates

    path = Path(args.checkpoint)
    if not path.is_file():
        raise CommandError(f"no checkpoint at {path}")
    try:
        rates_LxH = laplace_rates_of(path)
    except ValueError as e:
        raise CommandError(str(e)) from None
    H = rates_LxH.shape[1]
    # the rates at initialization, with the default exponent, which the registered personas use
    initial_H = initial_rates(H, GPTConfig.laplace_bias_exponent)
    out = Path(args.out) if args.out else path.with_name(path.stem + "_laplace_rates.png")  # beside the checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_laplace_rates(rates_LxH, out, f"laplace_bias decay rates of {path.name}", initial_H)
    for l, row in enumerate(rates_LxH):
        print(f"layer {l}: " + "  ".join(f"s_{h}={s:.4g}" for h, s in enumerate(row)))
    print(f"wrote {out}")
    return 0
