"""The `dreamteam` command line. Each command imports the engine it runs inside the command.

    dreamteam prepare  [--data-dir DIR] [--input PATH | --download]
    dreamteam train    [--engine torch|jax] [--persona NAME] [--seed S] [--max-iters N] [--device D] [--out-dir DIR]
    dreamteam parity   [--persona NAME ...] [--dtype ...] [--json PATH]     (same as python -m parity)
    dreamteam personas
"""

from __future__ import annotations

import argparse
import os
import sys


def _prepare(args) -> int:
    from dreamteam import data

    d = data.resolve_data_dir(args.data_dir, os.environ)
    info = data.prepare(d, args.input, download=args.download)
    print(f"wrote {d}/train.bin ({info['train_tokens']:,} tokens) and {d}/val.bin ({info['val_tokens']:,} tokens)")
    return 0


def _train(args) -> int:
    argv = ["--persona", args.persona, "--seed", str(args.seed), "--out-dir", args.out_dir]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    argv += ["--max-iters", str(args.max_iters)] if args.max_iters else []
    argv += ["--no-progress"] if args.no_progress else []
    if args.engine == "jax":
        if args.device not in (None, "cpu"):
            print("error: the JAX loop runs on the CPU; --device applies to the torch engine", file=sys.stderr)
            return 2
        from jaxmodel.train import main as jax_main

        return jax_main(argv)
    import train_mps

    argv += ["--device", args.device] if args.device else []
    return train_mps.main(argv)


def _personas(args) -> int:
    from dreamteam import registry

    for name, p in sorted(registry.PERSONAS.items()):
        print(f"{name:<22} components: {', '.join(p.model.components) or '-':<40} {p.description}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parity"]:  # the parity module owns its arguments
        from parity.__main__ import main as parity_main

        return parity_main(argv[1:])

    ap = argparse.ArgumentParser(prog="dreamteam", description="DreamTeam persona models.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write train.bin/val.bin from tiny Shakespeare's input.txt")
    p.add_argument("--data-dir", default=None, help="default: $DREAMTEAM_DATA, else ./data/shakespeare")
    p.add_argument("--input", default=None, help="path of input.txt (default: DATA_DIR/input.txt)")
    p.add_argument("--download", action="store_true", help="fetch the canonical input.txt when none is given (needs the network)")
    p.set_defaults(func=_prepare)

    t = sub.add_parser("train", help="train one persona under the frozen protocol")
    t.add_argument("--engine", choices=["torch", "jax"], default="torch")
    t.add_argument("--persona", default="baseline")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--device", default=None)
    t.add_argument("--max-iters", type=int, default=None, help="smoke runs only")
    t.add_argument("--out-dir", default="runs")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    sub.add_parser("parity", help="Flax/torch equivalence checks (python -m parity --help)")
    sub.add_parser("personas", help="list the registered personas").set_defaults(func=_personas)

    args = ap.parse_args(argv)
    from dreamteam.data import DataError

    try:
        return args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
