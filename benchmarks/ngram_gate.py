"""Where a trained ngram_memory model puts its weight: the learned gate g on validation windows, and the model's
own head alone against the mixture.

    python benchmarks/ngram_gate.py RUN.json [RUN.json ...] [--windows 96]

For each run record of train_mps.py (with its .safetensors beside it) with ngram_memory on: the gate
g = sigmoid(h . w_g + b_g) over the first --windows validation windows (mean and 10/50/90% quantiles), the
cross-entropy of the model's own softmax(z) there, and the mixture's (-log p_mix, what val_loss measures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dreamteam import data  # noqa: E402
from dreamteam.components import ngram_memory as nm  # noqa: E402


def main(argv=None) -> int:
    from safetensors.torch import load_model

    from torchport.model import GPT
    from train_mps import persona_of

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--windows", type=int, default=96)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    ds = data.load(args.data_dir, os.environ)
    x, y = data.val_windows(ds.val)
    x, y = (torch.from_numpy(a[: args.windows].astype(np.int64)) for a in (x, y))
    stats = nm.bigram_stats(ds.train, 50304)
    for path in args.runs:
        record = json.loads(Path(path).read_text())
        cfg = persona_of(record).model
        if "ngram_memory_order" not in record["config"]:  # recorded before the option existed: the bigram
            cfg = cfg.replace(ngram_memory_order=2)
        model = GPT(cfg, token_counts=data.token_counts(ds.train), ngram_stats=stats)
        load_model(model, str(Path(path).with_suffix(".safetensors")))
        model.eval()
        with torch.no_grad():
            h = model.hidden(x)
            g = torch.sigmoid(model.ngram_memory.gate(h)[..., 0]).numpy()
            own = F.cross_entropy(model.lm_head(h).flatten(0, 1), y.flatten()).item()
            mixture = model(x, y)[1].item()
        q = np.quantile(g, [0.1, 0.5, 0.9])
        print(f"{record['persona']} (order {cfg.ngram_memory_order}): gate mean {g.mean():.3f}, 10/50/90% "
              f"{q[0]:.3f}/{q[1]:.3f}/{q[2]:.3f}; model alone {own:.3f}, mixture {mixture:.3f} ({args.windows} windows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
