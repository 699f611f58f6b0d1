"""How far a trained good_turing_prior output bias moved from its Good-Turing start, by how often each id occurs
in train.bin: the drift that good_turing_prior_lr_ratio slows.

    python benchmarks/output_bias_drift.py CHECKPOINT.safetensors [--data-dir DIR]

The bias enters the softmax only up to a constant, so what matters is how the groups moved against each other
(the last column: against the ids seen 100 times or more). Prints one row per group of ids: their number, how
many validation tokens they are, and the mean, min and max of b - b_0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

from dreamteam import data  # noqa: E402
from dreamteam.components import good_turing_prior as good_turing  # noqa: E402

GROUPS = [("unseen", 0, 1), ("seen once", 1, 2), ("seen 2-9", 2, 10), ("seen 10-99", 10, 100), ("seen >= 100", 100, None)]


def in_group(counts: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    """Where lo <= counts < hi (no upper bound where hi is None): one group of GROUPS."""
    return (counts >= lo) & (counts < hi if hi is not None else True)


def drift_table(bias_V: np.ndarray, train_counts_V: np.ndarray, val_counts_V: np.ndarray) -> list[dict]:
    """One dict per group of GROUPS: ids, val_tokens, mean/min/max of bias - log_prior(train_counts)."""
    delta_V = np.asarray(bias_V, dtype=np.float64) - good_turing.log_prior(train_counts_V)
    rows = []
    for name, lo, hi in GROUPS:
        ids = in_group(train_counts_V, lo, hi)
        d = delta_V[ids]
        rows.append(dict(group=name, ids=int(ids.sum()), val_tokens=int(val_counts_V[ids].sum()),
                         mean=float(d.mean()) if d.size else float("nan"),
                         min=float(d.min()) if d.size else float("nan"), max=float(d.max()) if d.size else float("nan")))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a safetensors checkpoint of a model with good_turing_prior (lm_head.bias)")
    ap.add_argument("--data-dir", default=None, help="train.bin/val.bin folder (default: $DREAMTEAM_DATA)")
    args = ap.parse_args(argv)
    from safetensors.numpy import load_file

    tensors = load_file(args.checkpoint)
    if "lm_head.bias" not in tensors:
        print(f"error: {args.checkpoint} has no lm_head.bias (a model without good_turing_prior)", file=sys.stderr)
        return 2
    data_dir = data.resolve_data_dir(args.data_dir, os.environ)
    vocab = tensors["lm_head.bias"].shape[0]
    train = data.token_counts(data.load_split(data_dir / "train.bin"), vocab)
    val = data.token_counts(data.load_split(data_dir / "val.bin"), vocab)
    rows = drift_table(tensors["lm_head.bias"], train, val)
    ref = rows[-1]["mean"]
    print(f"{'ids in train.bin':<16} {'ids':>6} {'val tokens':>10} {'mean':>8} {'min':>8} {'max':>8} {'mean - frequent':>16}")
    for r in rows:
        print(f"{r['group']:<16} {r['ids']:>6} {r['val_tokens']:>10} {r['mean']:>+8.3f} {r['min']:>+8.3f} {r['max']:>+8.3f} {r['mean'] - ref:>+16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
