"""`dreamteam expert-load`, moe_mlp's command: each expert's share of the routed tokens over training, from
the `expert_load` of a run record (train_mps.py writes it), drawn per layer. The command line
(dreamteam/tools/cli.py) checks the arguments and calls `expert_load_command`; it needs numpy and matplotlib, no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dreamteam.arguments import CommandError


def draw_expert_load(expert_load: list[dict], path: Path, title: str) -> Path:
    """moe_mlp load over training, one panel per layer: each expert's share of the routed (token, slot)
    selections in each interval between checkpoints (the run record's `expert_load`), 1/E dashed."""
    if not expert_load:
        raise ValueError("no expert loads to draw: the run record has no `expert_load` (was moe_mlp on?)")
    import matplotlib

    matplotlib.use("Agg")  # files only, on machines without a display
    import matplotlib.pyplot as plt

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


def expert_load_command(args) -> int:
    """args: record (a run record .json), out (None: RECORD_expert_load.png beside the record)."""
    try:
        rec = json.loads(Path(args.record).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandError(f"{args.record} is not readable JSON ({e})") from None
    if not isinstance(rec, dict):
        raise CommandError(f"{args.record} is not a run record (a JSON object)")
    record = Path(args.record)
    out = Path(args.out) if args.out else record.with_name(record.stem + "_expert_load.png")  # beside the record
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        draw_expert_load(rec.get("expert_load", []), out,
                         f"{rec.get('persona')}: expert load over training (seed {rec.get('seed')}, {rec.get('device')}, "
                         f"{rec.get('max_iters')} it)")
    except ValueError as e:
        raise CommandError(str(e)) from None
    print(f"wrote {out}")
    return 0
