"""Time the baseline training step, forward + backward + optimizer step, eager against the fused loss.

    python benchmarks/bench_step.py [--device cpu] [--warmup 3] [--steps 20] [--chunk 48]
                                    [--sweep 16,32,64,128] [--compile] [--threads N] [--json PATH]
                                    [--personas NAME ...] [--data-dir DIR] [--profile N]

Every variant trains its own copy of the same initial baseline model (protocol shapes: batch 8 x 64, 4 layers,
4 heads, width 32, the 50304-way tied head) with the baseline recipe (AdamW, clipping), on the same random
batches. The timed steps are interleaved (step i of every variant, then step i + 1, ...), so that a machine
shared with other work slows every variant alike; the median and the minimum ms/step are reported, and the
load average before and after says how shared the machine was.

Variants: `eager` is the reference, `loss = model(x, y)[1]` with nanoGPT's AdamW (torch's multi-tensor loop;
its fused kernel on CUDA only: torchport.recipe.reference_fused); `fast` is torchport.fast.fused_loss (the
chunked linear cross-entropy) with torch's fused AdamW where the device has it (GPT.configure_optimizers);
`fast_adamw_loop`, the same loss with the reference's AdamW (the loop but on CUDA), splits the gain between
the two. `--sweep` adds `fast_c<C>` for other chunk sizes; `--compile` adds the same two loss functions under
torch.compile (CPU and CUDA only; compilation time is reported separately, not in ms/step).
`--personas NAME ...` adds `NAME:eager` and `NAME:fast` for each other persona or ablation label: its model (built with
the train.bin token counts of --data-dir / $DREAMTEAM_DATA), its recipe and its after-step updates
(moe_mlp's balancing bias), interleaved with the baseline's steps, so the per-iteration times compare on the
same device in one run.
`--profile N` then runs N more `fast` steps under torch.profiler and prints (and records) where their time
goes, operator by operator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from dreamteam import protocol, registry  # noqa: E402
from dreamteam.runs import processor_name  # noqa: E402
from torchport import recipe as recipes  # noqa: E402
from torchport.fast import DEFAULT_CHUNK, fused_loss  # noqa: E402
from torchport.model import GPT  # noqa: E402


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def variant_optimizer(model, recipe, variant: str, device: str):
    """The variant's optimizer: the eager variants and fast_adamw_loop run the reference's AdamW form, the
    others the fused AdamW where the device has it."""
    device_type = device.split(":")[0]
    reference = "eager" in variant or variant.endswith("adamw_loop")
    return recipes.build_optimizer(model, recipe, device_type=device_type,
                                   fused=recipes.reference_fused(device_type) if reference else None)


def make_variants(args):
    fast = lambda m, x, y: fused_loss(m, x, y, args.chunk)  # noqa: E731
    variants = {"eager": lambda m, x, y: m(x, y)[1], "fast": fast, "fast_adamw_loop": fast}
    for c in args.sweep:
        if c != args.chunk:
            variants[f"fast_c{c}"] = (lambda c: lambda m, x, y: fused_loss(m, x, y, c))(c)
    if args.compile:
        if args.device == "mps":
            raise SystemExit("--compile is for the CPU and CUDA; it stays off on MPS")
        for name in ("eager", "fast"):
            variants[f"{name}_compiled"] = torch.compile(variants[name])
    return variants


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="tokens per chunk of the fused loss")
    ap.add_argument("--sweep", default="", help="comma-separated further chunk sizes to time, e.g. 16,64,128")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd loss functions")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this process (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the numbers here")
    ap.add_argument("--personas", nargs="*", default=[], metavar="NAME",
                    help="also time these personas' train steps (eager and fast), interleaved with the baseline's")
    ap.add_argument("--data-dir", default=None, help="train.bin for the token counts (default: $DREAMTEAM_DATA)")
    ap.add_argument("--data-batches", action="store_true",
                    help="batches from train.bin (seeded) instead of uniform random ids: needed where the cost depends "
                         "on the targets (adaptive_softmax computes a tail cluster only for the targets in it)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after the timing, profile N more fast steps (torch.profiler) and print the top operators")
    args = ap.parse_args(argv)
    args.sweep = [int(c) for c in args.sweep.split(",") if c.strip()]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("MPS is not available on this machine")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available on this machine")

    persona = registry.get("baseline")
    cfg, recipe = persona.model, persona.recipe
    B, T = protocol.BATCH_SIZE, protocol.BLOCK_SIZE
    gen = torch.Generator().manual_seed(args.seed)
    n_batches = args.warmup + args.steps
    batches = [torch.randint(0, protocol.GPT2_VOCAB_SIZE, (2, B, T), generator=gen).to(device) for _ in range(n_batches)]
    if args.data_batches:
        from dreamteam import data

        sampler = data.BatchSampler(data.load(args.data_dir, os.environ).train, B, T, seed=(args.seed, 0))
        batches = [torch.from_numpy(__import__("numpy").stack(sampler()).astype("int64")).to(device) for _ in range(n_batches)]

    variants = make_variants(args)
    torch.manual_seed(args.seed)
    init = GPT(cfg).state_dict()
    runs = {}
    for name in variants:
        model = GPT(cfg).to(device)
        model.load_state_dict(init)
        model.train()
        runs[name] = (model, variant_optimizer(model, recipe, name, device), recipe)
    counts = None
    for pname in args.personas:
        if pname == "baseline":
            continue
        other = registry.from_label(pname)  # a registered name or an ablation label (ada_lovelace-moe_mlp)
        if counts is None:
            from dreamteam import data
            from dreamteam.components import ngram_memory

            train_ids = data.load(args.data_dir, os.environ).train
            counts = data.token_counts(train_ids, other.model.vocab_size)
        bigrams = ngram_memory.stats_for(other.model, train_ids)  # slot: head_mixture
        torch.manual_seed(args.seed)
        p_init = GPT(other.model, token_counts=counts, ngram_stats=bigrams).state_dict()
        for kind in ("eager", "fast"):
            model = GPT(other.model, token_counts=counts, ngram_stats=bigrams).to(device)
            model.load_state_dict(p_init)  # both variants start from the same weights
            model.train()
            variants[f"{pname}:{kind}"] = variants[kind]
            runs[f"{pname}:{kind}"] = (model, variant_optimizer(model, other.recipe, kind, device), other.recipe)

    def step(name, i):
        model, opt, rec = runs[name]
        x, y = batches[i]
        loss = variants[name](model, x, y)
        loss.backward()
        recipes.optimizer_step(model, opt, rec, i)
        model.after_step()
        return loss

    load_before = os.getloadavg()
    first_loss, warmup_s = {}, {}
    for name in variants:  # warmup (and compilation) one variant at a time
        synchronize(device)
        t0 = time.perf_counter()
        for i in range(args.warmup):
            loss = step(name, i)
            if i == 0:
                first_loss[name] = loss.item()
        synchronize(device)
        warmup_s[name] = time.perf_counter() - t0
    times = {name: [] for name in variants}
    for i in range(args.warmup, n_batches):  # interleaved timed steps
        for name in variants:
            synchronize(device)
            t0 = time.perf_counter()
            step(name, i)
            synchronize(device)
            times[name].append(1000 * (time.perf_counter() - t0))
    load_after = os.getloadavg()

    summary = {name: {"median_ms": statistics.median(ts), "min_ms": min(ts), "mean_ms": statistics.fmean(ts)}
               for name, ts in times.items()}
    print(f"device {device}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"warmup {args.warmup}  steps {args.steps}  load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    base = summary["eager"]["median_ms"]
    for name, s in summary.items():
        print(f"{name:>16}: {s['median_ms']:8.1f} ms/step median  {s['min_ms']:8.1f} min  "
              f"eager/{name} = {base / s['median_ms']:.2f}x  (first loss {first_loss.get(name, float('nan')):.6f}, "
              f"warmup {warmup_s[name]:.1f} s)")
    profile = None
    if args.profile > 0:
        with torch.profiler.profile() as prof:
            for i in range(args.profile):
                step("fast", i % n_batches)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total_us = sum(e.self_cpu_time_total for e in events)
        profile = {"steps": args.profile, "self_cpu_ms_per_step": total_us / 1000 / args.profile,
                   "top_self_cpu_share": {e.key: e.self_cpu_time_total / total_us for e in events[:15]}}
    if args.json:
        record = {
            "command": shlex.join(["python", "benchmarks/bench_step.py", *(sys.argv[1:] if argv is None else argv)]),
            "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": processor_name(),
            "python": platform.python_version(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "PYTHONPATH")}, "warmup": args.warmup, "steps": args.steps, "chunk": args.chunk,
            "data_batches": args.data_batches, "personas": ["baseline", *[p for p in args.personas if p != "baseline"]],
            "load_average_before": load_before, "load_average_after": load_after,
            "ms_per_step": summary, "ratio_eager_over_fast": base / summary["fast"]["median_ms"],
            "fused_optimizer": {name: recipes.is_fused(runs[name][1]) for name in variants},
            "times_ms": times, "first_loss": first_loss, "warmup_s": warmup_s, "profile": profile,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
