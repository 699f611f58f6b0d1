"""python -m parity [--persona NAME ...] [--component NAME ...] [--dtype float32 float64] [--json PATH]

Prints a table (persona, check, dtype, max error, bound, pass) and exits non-zero on any failure.
"""

from __future__ import annotations

import json
import sys

from dreamteam import registry


def main(argv=None) -> int:
    from dreamteam import arguments

    ap = arguments.Parser(prog="python -m parity", description=__doc__.splitlines()[0],
                          formatter_class=arguments.HelpFormatter)
    ap.add_argument("--persona", nargs="+", default=None, help=f"default: all of {sorted(registry.PERSONAS)}")
    ap.add_argument("--component", nargs="*", default=None,
                    help="baseline + each named component alone; with no names, every known component")
    ap.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"],
                    help="precisions to check in")
    ap.add_argument("--batch-size", type=arguments.positive_int, default=4, help="sequences per checked batch")
    ap.add_argument("--steps", type=arguments.positive_int, default=20, help="length of the training trajectory")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON (default: no file)")
    args = ap.parse_args(argv)
    from dreamteam.config import KNOWN_COMPONENTS, ConfigError

    try:
        personas = [registry.get(n) for n in (args.persona or ([] if args.component is not None else sorted(registry.PERSONAS)))]
        components = args.component if args.component else (list(KNOWN_COMPONENTS) if args.component is not None else [])
        personas += [registry.build("baseline", add=(c,)) for c in components]
    except (registry.UnknownPersonaError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from parity.checks import run

    results = run(personas, args.dtype, batch_size=args.batch_size, steps=args.steps, fast_trajectory=True)
    header = f"{'persona':<28} {'check':<30} {'dtype':<8} {'max error':>11} {'bound':>8} {'metric':>6}  pass"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.persona:<28} {r.check:<30} {r.dtype:<8} {r.max_error:>11.3e} {r.bound:>8.0e} {r.metric:>6}  {'yes' if r.passed else 'NO'}"
              + (f"  ({r.note})" if r.note else ""))
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in results], f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
