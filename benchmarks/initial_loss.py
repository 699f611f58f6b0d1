"""The initial val_loss (whole validation set, docs/protocol.md) of untrained models, against the Good-Turing unigram
cross-entropy and ln V: what the good_turing_prior component's starting point is worth.

    python benchmarks/initial_loss.py [--data-dir DIR] [--seeds 0 1] [--personas baseline alan_turing]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamteam import data, protocol, registry  # noqa: E402
from dreamteam.components import good_turing_prior as good_turing  # noqa: E402
from torchport.evaluate import val_loss  # noqa: E402
from torchport.model import GPT  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help=f"default: ${data.DATA_ENV_VAR}, else ./data/shakespeare")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--personas", nargs="+", default=["baseline", "baseline+good_turing_prior", "alan_turing"],
                    help="registered names, or baseline+COMPONENT")
    args = ap.parse_args(argv)
    dataset = data.load(args.data_dir, dict(os.environ))
    counts = data.token_counts(dataset.train, protocol.VOCAB_SIZE)
    vx, vy = data.val_windows(dataset.val, protocol.BLOCK_SIZE)
    print(f"ln V = {np.log(protocol.VOCAB_SIZE):.4f}; Good-Turing unigram cross-entropy on val "
          f"(train.bin counts): {good_turing.unigram_cross_entropy(counts, vy):.4f}")
    for name in args.personas:
        base, _, add = name.partition("+")
        persona = registry.build(base, add=(add,)) if add else registry.get(name)
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = GPT(persona.model, token_counts=counts)
            print(f"{name:<28} seed {seed}: initial val_loss {val_loss(model, vx, vy, 'cpu'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
