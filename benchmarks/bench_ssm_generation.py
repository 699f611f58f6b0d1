"""Generation speed of one difference_ssm layer: the recurrence against recomputing the convolution.

    python benchmarks/bench_ssm_generation.py [--device cpu] [--lengths 64 256 512] [--batch 1] [--threads 1]
                                              [--repeats 3] [--json PATH]

To generate token t the layer needs its output at t given inputs 0..t. Three ways, all exact (checked equal
to 1e-5 relative in float32 before timing):

  recurrent   one `step` per token: s = lambda (I + N) s + B u_t, y = C . s + D u_t; O(D m) per token
  conv_last   the closed-form kernel K_0..K_t (cached) dotted with the history: O(D t) per token
  conv_full   the training forward on the whole prefix (T x T Toeplitz product), last row kept: what a
              model without a state cache (nanoGPT's generate) does; O(D t^2) per token

Each method generates L tokens one by one from an empty context (the layer with protocol width 32, order 4,
c_in and c_proj included); reported: the mean ms per generated token over the L tokens, the median of
--repeats runs. The methods are interleaved per repeat so a shared machine slows them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from dreamteam import registry  # noqa: E402
from dreamteam.runs import processor_name  # noqa: E402
from torchport.model import GPT  # noqa: E402


@torch.no_grad()
def recurrent(layer, x):
    B, L, _ = x.shape
    s, out = layer.initial_state(B), []
    for t in range(L):
        y, s = layer.step(x[:, t], s)
        out.append(y)
    return torch.stack(out, 1)


@torch.no_grad()
def conv_last(layer, x):
    B, L, _ = x.shape
    K = layer.kernel(L)  # (D, L), computed once: the kernel does not depend on the tokens
    u_hist, out = [], []
    for t in range(L):
        u_hist.append(layer.c_in(x[:, t]))
        u = torch.stack(u_hist[::-1], 1)  # u_t, u_{t-1}, ..., u_0
        y = (u * K[:, : t + 1].T).sum(1) + layer.D * u_hist[-1]
        out.append(layer.c_proj(y))
    return torch.stack(out, 1)


@torch.no_grad()
def conv_full(layer, x):
    return torch.stack([layer(x[:, : t + 1])[:, -1] for t in range(x.shape[1])], 1)


METHODS = {"recurrent": recurrent, "conv_last": conv_last, "conv_full": conv_full}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lengths", nargs="+", type=int, default=[64, 256, 512])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = registry.get("charles_babbage").model
    layer = GPT(cfg).transformer.h[cfg.difference_ssm_layers[0]].attn.to(args.device).eval()
    with torch.no_grad():  # a trained-looking layer: slower and faster channels, all differences in use
        layer.B.normal_(0.0, 0.3)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for L in args.lengths:
        x = torch.randn(args.batch, L, cfg.n_embd, device=args.device)
        ref = recurrent(layer, x)
        for name, fn in METHODS.items():
            err = float((fn(layer, x) - ref).norm() / ref.norm())
            if err > 1e-5:
                raise SystemExit(f"{name} differs from the recurrence by {err:.2e} at L={L}")
        times = {name: [] for name in METHODS}
        for _ in range(args.repeats):
            for name, fn in METHODS.items():
                t0 = time.perf_counter()
                fn(layer, x)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - t0) * 1000 / L)
        row = {"L": L, **{f"{n}_ms_per_token": statistics.median(v) for n, v in times.items()}}
        rows.append(row)
        print(f"L={L:5d}  " + "  ".join(f"{n} {row[f'{n}_ms_per_token']:.3f} ms/token" for n in METHODS)
              + f"  (conv_full / recurrent = {row['conv_full_ms_per_token'] / row['recurrent_ms_per_token']:.1f}x)")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    info = {"device": args.device, "cpu": processor_name(), "threads": args.threads,
            "batch": args.batch, "torch": torch.__version__, "load_avg_before": load_before, "load_avg_after": load_after,
            "seed": args.seed, "rows": rows}
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch}, torch {torch.__version__}, "
          f"load average {load_before} -> {load_after}")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
