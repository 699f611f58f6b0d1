"""What reaches each norm of a trained model: the RMS of its inputs and outputs, and for `dyt` the share saturated.

    python benchmarks/norm_inputs.py CHECKPOINT.safetensors [--persona NAME] [--data-dir DIR] [--windows N]

The checkpoint's config comes from the run record beside it (NAME.json), or from --persona. Runs the model on the
first N whole-validation windows (docs/protocol.md; default 16) and prints one row per norm (ln_1 and ln_2 of each
block, ln_f): the RMS of its input over every position and feature, of its output, and for Dynamic Tanh the share of
outputs within 1% of their bound, |y - bias| >= 0.99 |weight| (tanh(alpha x) at +-0.99 or beyond: a unit whose
gradient through tanh is at most 2% of its linear value). A LayerNorm or RMSNorm rescales whatever arrives; a DyT
passes a residual stream that has grown far beyond 1/alpha as signs alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dreamteam import data, registry
from dreamteam.arguments import CommandError


def norm_inputs(model, x_NxT) -> list[dict]:
    """One dict per norm module of a torch GPT, in forward order: name, input RMS, output RMS, saturated share
    (None for norms other than DyT), over the batch x_NxT."""
    import torch

    from torchport.dyt import DyT

    norms = [(f"h.{i}.{n}", getattr(block, n)) for i, block in enumerate(model.transformer.h) for n in ("ln_1", "ln_2")]
    norms.append(("ln_f", model.transformer.ln_f))
    sums = {n: [0.0, 0.0, 0.0, 0] for n, _ in norms}  # input sq, output sq, saturated, count

    def hook(name):
        def record(module, inputs, y):
            x = inputs[0].double()
            y = y.double()
            s = sums[name]
            s[0] += float(x.pow(2).sum())
            s[1] += float(y.pow(2).sum())
            if isinstance(module, DyT):
                centred = y if module.bias is None else y - module.bias.double()
                s[2] += float((centred.abs() >= 0.99 * module.weight.double().abs()).sum())
            s[3] += x.numel()
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in norms]
    try:
        with torch.no_grad():
            for i in range(0, len(x_NxT), 8):
                model(torch.as_tensor(x_NxT[i : i + 8]))
    finally:
        for h in handles:
            h.remove()
    return [{"norm": n, "kind": type(m).__name__, "input_rms": (sums[n][0] / sums[n][3]) ** 0.5,
             "output_rms": (sums[n][1] / sums[n][3]) ** 0.5,
             "saturated": sums[n][2] / sums[n][3] if isinstance(m, DyT) else None}
            for n, m in norms]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--persona", default=None, help="the registered persona whose config to build (default: the record's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--windows", type=int, default=16, help="whole-validation windows to run (default 16)")
    args = p.parse_args(argv)
    try:
        from torchport.checkpoint import trained_model

        dataset = data.load(args.data_dir, dict(os.environ))
        model, config = trained_model(args.checkpoint, dataset.train, args.persona)
    except (data.DataError, CommandError, registry.UnknownPersonaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    x_NxT, _ = data.val_windows(dataset.val, config.block_size)
    rows = norm_inputs(model, x_NxT[: args.windows])
    print(f"{Path(args.checkpoint).name}: {min(args.windows, len(x_NxT))} whole-validation windows")
    print(f"{'norm':<10}{'kind':<9}{'input RMS':>11}{'output RMS':>12}{'saturated':>11}")
    for r in rows:
        sat = "" if r["saturated"] is None else f"{r['saturated']:.3f}"
        print(f"{r['norm']:<10}{r['kind']:<9}{r['input_rms']:>11.3f}{r['output_rms']:>12.3f}{sat:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
