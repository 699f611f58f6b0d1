"""Cost per token of the output layer: the baseline's tied 50304-way head (torchport.fast's chunked linear
cross-entropy) against adaptive_softmax's clustered loss, forward + backward, on train.bin batches.

    python benchmarks/bench_head.py [--steps 20] [--threads 1] [--data-dir DIR]

Both take the same hidden states h (N = 8 * 64 tokens, D = 32) and targets; the times are interleaved and
the median per step and per token is printed, with the multiply-adds per token of each (counted from the
shapes: the baseline V * D; adaptive_softmax (head + C) * D plus, for a target in tail c, D * d_c + d_c * n_c).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamteam import data, protocol, registry  # noqa: E402
from torchport.fast import fused_loss  # noqa: E402
from torchport.model import GPT  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = data.load(args.data_dir, os.environ).train
    counts = data.token_counts(train, protocol.VOCAB_SIZE)
    torch.manual_seed(0)
    models = {"tied_head": GPT(registry.get("baseline").model),
              "adaptive_softmax": GPT(registry.build("baseline", add=("adaptive_softmax",)).model, token_counts=counts)}
    for m in models.values():
        m.hidden = lambda idx, _m=m: _h  # time the output layer only: fixed hidden states
    sampler = data.BatchSampler(train, protocol.BATCH_SIZE, protocol.BLOCK_SIZE, seed=(0, 0))
    times = {k: [] for k in models}
    for i in range(args.steps + 2):
        x, y = sampler()
        y = torch.from_numpy(y.astype(np.int64))
        _h = torch.randn(*y.shape, protocol.N_EMBD, requires_grad=True)
        for name, m in models.items():
            t0 = time.perf_counter()
            fused_loss(m, None, y).backward()
            if i >= 2:
                times[name].append(1000 * (time.perf_counter() - t0))
    asm = models["adaptive_softmax"].transformer.adaptive_softmax
    N = protocol.BATCH_SIZE * protocol.BLOCK_SIZE
    print(f"torch {torch.__version__}  threads {torch.get_num_threads()}  load average {os.getloadavg()[0]:.2f}  "
          f"steps {args.steps}  N = {N} tokens")
    print(f"clusters: head {asm.head_size}, tails {asm.tail_sizes} (edges {asm.edges})")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>17}: {med:8.2f} ms/step median, {1000 * med / N:7.2f} us/token (forward + backward)")
    D = protocol.N_EMBD
    widths = [max(1, D // 2 ** (i + 1)) for i in range(len(asm.tail_sizes))]
    print(f"multiply-adds per token, forward: tied head {protocol.VOCAB_SIZE * D:,}; adaptive_softmax head "
          f"{(asm.head_size + len(asm.tail_sizes)) * D:,} + tail c: "
          + ", ".join(f"{D * d + d * n:,}" for d, n in zip(widths, asm.tail_sizes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
