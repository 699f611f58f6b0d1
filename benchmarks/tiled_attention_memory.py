"""Peak temporary memory of causal attention in JAX against the sequence length T: tiled vs naive.

    python benchmarks/tiled_attention_memory.py [--lengths 64 128 256 512 1024 2048] [--block 16]
                                                [--heads 4] [--head-dim 8] [--grad]

The figure is XLA's own accounting of the compiled function, `compiled.memory_analysis().temp_size_in_bytes`
(buffers besides the arguments and the output), for one sequence of T tokens, float32. The naive version
holds the T x T scores and weights; the tiled one (jaxmodel/tiled_attention.py) holds the scores of every
query block against one key block, T x block, so it should grow about linearly. With --grad the same for
the gradient of sum(output) (the scan's saved residuals: see the docs for what that shows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxmodel.tiled_attention import naive_attention, tiled_attention  # noqa: E402


def temp_bytes(fn, T, H, E, grad):
    x = jax.ShapeDtypeStruct((1, H, T, E), jnp.float32)
    if grad:
        f = fn
        fn = jax.grad(lambda q, k, v: f(q, k, v).sum(), argnums=(0, 1, 2))
    return jax.jit(fn).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", nargs="+", type=int, default=[64, 128, 256, 512, 1024, 2048])
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=8)
    ap.add_argument("--grad", action="store_true")
    args = ap.parse_args(argv)
    tiled = lambda q, k, v: tiled_attention(q, k, v, block=args.block)  # noqa: E731
    print(f"{'T':>6} {'tiled temp bytes':>18} {'naive temp bytes':>18} {'naive/tiled':>12}")
    prev = None
    for T in args.lengths:
        t = temp_bytes(tiled, T, args.heads, args.head_dim, args.grad)
        n = temp_bytes(naive_attention, T, args.heads, args.head_dim, args.grad)
        growth = f"  tiled x{t / prev[0]:.2f}, naive x{n / prev[1]:.2f} vs previous T" if prev else ""
        print(f"{T:>6} {t:>18,} {n:>18,} {n / t:>12.1f}{growth}")
        prev = (t, n)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, block {args.block}, heads {args.heads}, "
          f"head dim {args.head_dim}, float32, batch 1{', gradient' if args.grad else ', forward'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
