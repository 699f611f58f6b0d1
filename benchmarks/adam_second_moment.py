"""How large Adam's second moment is on the token embedding's rows, by how often each id occurs in train.bin,
after a few hundred steps of a persona's own training: what `eps` has to be compared with.

    python benchmarks/adam_second_moment.py [--persona leonardo_da_vinci] [--iters 300] [--seed 0] [--set K=V ...]

The persona's model, optimizer and schedule (torchport.recipe), batches of the protocol's size drawn from
train.bin with a seeded generator. Prints, per group of ids (the groups of output_bias_drift.py), the mean over
the group's rows of sqrt(v) averaged along each row, and the median over the other matrices of their mean
sqrt(v). Adam's step on a coordinate is m / (sqrt(v) + eps): where sqrt(v) is far below eps the step shrinks.
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

from dreamteam import data, protocol, registry, settings
from dreamteam.arguments import CommandError


def second_moments(persona, train: np.ndarray, iters: int, seed: int) -> tuple[np.ndarray, float]:
    """(per embedding row, the mean of sqrt(v) along the row; the median over the other matrices of their mean
    sqrt(v)) after `iters` steps of the persona's training on random batches of train."""
    import torch

    from dreamteam.components import ngram_memory
    from torchport import recipe as recipes
    from torchport.model import GPT

    torch.manual_seed(seed)
    config = persona.model
    model = GPT(config, token_counts=data.token_counts(train, config.vocab_size),
                ngram_stats=ngram_memory.stats_for(config, train))
    optimizer = recipes.build_optimizer(model, persona.recipe, device_type="cpu")
    rng = np.random.default_rng(seed)
    T, B = config.block_size, protocol.BATCH_SIZE
    for it in range(iters):
        ix = rng.integers(0, len(train) - T - 1, B)
        x = torch.from_numpy(np.stack([train[i : i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([train[i + 1 : i + T + 1] for i in ix]).astype(np.int64))
        _, loss = model(x, y)
        loss.backward()
        recipes.optimizer_step(model, optimizer, persona.recipe, it)
    wte = model.transformer.wte.weight
    rows = optimizer.state[wte]["exp_avg_sq"].sqrt().mean(1).numpy()
    others = [optimizer.state[p]["exp_avg_sq"].sqrt().mean().item() for p in model.parameters()
              if p is not wte and p.dim() >= 2 and "exp_avg_sq" in optimizer.state.get(p, {})]
    return rows, float(np.median(others)) if others else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--persona", default="leonardo_da_vinci")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings, as train_mps.py --set")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    try:
        persona = settings.with_settings(registry.from_label(args.persona), settings.parse_settings(args.set))
        train = data.load(args.data_dir, dict(os.environ)).train
    except (data.DataError, CommandError, registry.UnknownPersonaError, settings.SettingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, others = second_moments(persona, train, args.iters, args.seed)
    counts = data.token_counts(train, persona.model.vocab_size)
    print(f"{persona.name}, {args.iters} steps, seed {args.seed}, eps {persona.recipe.eps:g}: mean sqrt(v) per embedding row")
    for name, lo, hi in GROUPS:
        sel = in_group(counts, lo, hi)
        print(f"{name:<14}{int(sel.sum()):>7} ids  {rows[sel].mean():.2e}")
    print(f"{'other matrices (median)':<26}{others:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
