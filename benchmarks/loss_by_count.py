"""Where a trained model's validation loss comes from, by how often each target id occurs in train.bin.

    python benchmarks/loss_by_count.py CHECKPOINT.safetensors [--persona NAME] [--data-dir DIR]

The checkpoint's config comes from the run record beside it (NAME.json), or from --persona. The loss is the protocol's val_loss
(every predicted token of the whole-validation windows, docs/protocol.md), split by the target's count in
train.bin. Prints one row per group: the share of validation targets, their mean loss in nats, and their
contribution to val_loss (share x mean); the contributions add up to val_loss. A model that generalizes worse
late in training shows where: on the ids it never saw, or as overconfidence on the frequent ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # output_bias_drift beside it, also when loaded by path

import numpy as np
from output_bias_drift import GROUPS, in_group

from dreamteam import data, registry
from dreamteam.arguments import CommandError


def loss_by_count(loss_N: np.ndarray, target_counts_N: np.ndarray) -> list[dict]:
    """One dict per group of GROUPS: share of the N targets, mean loss, contribution (share x mean)."""
    loss_N = np.asarray(loss_N, dtype=np.float64)
    rows = []
    for name, lo, hi in GROUPS:
        sel = in_group(target_counts_N, lo, hi)
        share = float(sel.mean())
        mean = float(loss_N[sel].mean()) if sel.any() else float("nan")
        rows.append({"group": name, "share": share, "mean": mean, "contribution": float(loss_N[sel].sum() / loss_N.size)})
    return rows


def token_losses(checkpoint, dataset, persona: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(-log p(y | x) per predicted token of the whole-validation windows, the targets), float64."""
    import torch
    import torch.nn.functional as F

    from torchport.checkpoint import trained_model

    model, config = trained_model(checkpoint, dataset.train, persona)
    x_NxT, y_NxT = data.val_windows(dataset.val, config.block_size)
    losses = []
    with torch.no_grad():
        for i in range(0, len(x_NxT), 16):
            x, y = torch.from_numpy(x_NxT[i : i + 16]), torch.from_numpy(y_NxT[i : i + 16])
            logits, _ = model(x, y)
            losses.append(F.cross_entropy(logits.flatten(0, 1).double(), y.flatten(), reduction="none").numpy())
    return np.concatenate(losses), y_NxT.reshape(-1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--persona", default=None, help="the registered persona whose config to build (default: the record's)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    try:
        dataset = data.load(args.data_dir, dict(os.environ))
        loss_N, y_N = token_losses(args.checkpoint, dataset, args.persona)
    except (data.DataError, CommandError, registry.UnknownPersonaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts_V = data.token_counts(dataset.train)
    print(f"{Path(args.checkpoint).name}: val_loss {loss_N.mean():.4f} over {loss_N.size} targets")
    print(f"{'group':<14}{'share':>8}{'mean loss':>11}{'contribution':>14}")
    for r in loss_by_count(loss_N, counts_V[y_N]):
        print(f"{r['group']:<14}{r['share']:>8.4f}{r['mean']:>11.3f}{r['contribution']:>14.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
