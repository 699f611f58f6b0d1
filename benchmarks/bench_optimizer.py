"""Time Muon against AdamW: the optimizer step alone and the whole training step, on one device.

    python benchmarks/bench_optimizer.py [--persona alan_turing] [--device cpu] [--warmup 3] [--steps 50]
                                         [--bf16] [--threads N] [--json PATH]
                                         [--muon-from OTHER_CHECKOUT/torchport/muon.py]

Variants, each on its own copy of the same initial model (the persona's model at the protocol shapes: batch
8 x 64, 4 layers, 4 heads, width 32) with the persona's recipe:
  adamw       the persona with the component `muon` removed: AdamW for every parameter (torch's fused kernel
              where the device has one, as training runs it)
  adamw_loop  the same with torch's multi-tensor AdamW loop (the eager reference's)
  muon        the persona as registered: Muon for the matrices inside the blocks (Newton-Schulz batched per
              matrix shape), AdamW for the rest (torch's fused kernel where the device has one, as adamw)
  muon_bf16   (--bf16) Muon with the Newton-Schulz iteration in bfloat16
  muon_from   (--muon-from PATH) the persona with the Muon of another torchport/muon.py (before/after a change)
Two timings per variant: `opt` is torchport.recipe.optimizer_step alone (schedule, global clipping, step, zero)
on a fixed set of gradients, re-attached before each timed step; `train` is the whole step (fused loss, backward,
optimizer_step) on fresh batches. The timed steps are interleaved across variants (step i of every variant,
then step i + 1), so that a shared machine slows each alike; median and minimum ms are reported, with the load
average before and after.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamteam import protocol, registry  # noqa: E402
from dreamteam.runs import processor_name  # noqa: E402
from dreamteam.config import Persona  # noqa: E402
from torchport import recipe as recipes  # noqa: E402
from torchport.fast import fused_loss  # noqa: E402
from torchport.model import GPT  # noqa: E402


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def variants(persona_name: str, bf16: bool) -> dict[str, Persona]:
    """{'adamw', 'adamw_loop': the persona without muon, 'muon': with it (added where it lacks it),
    'muon_bf16' (bf16)}."""
    persona = registry.get(persona_name)
    with_muon = persona.model.replace(components=tuple(c for c in persona.model.components if c != "muon") + ("muon",))
    without = persona.model.replace(components=tuple(c for c in persona.model.components if c != "muon"))
    out = {"adamw": Persona(persona.name + "-muon", without, persona.recipe),
           "adamw_loop": Persona(persona.name + "-muon", without, persona.recipe),
           "muon": Persona(persona.name, with_muon, persona.recipe)}
    if bf16:
        out["muon_bf16"] = Persona(persona.name + "-bf16", with_muon, persona.recipe.replace(muon_bf16=True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="alan_turing", help="a persona; muon is added if it lacks it")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--bf16", action="store_true", help="also time Muon with the bfloat16 Newton-Schulz")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--muon-from", default=None, metavar="PATH",
                    help="also time `muon_from`: the persona with the Muon of this torchport/muon.py file (e.g. another "
                         "checkout's), interleaved with the others in the same process")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available on this machine")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("MPS is not available on this machine")
    try:
        specs = variants(args.persona, args.bf16)
    except (registry.UnknownPersonaError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    other_muon = None
    if args.muon_from:
        import importlib.util

        if not Path(args.muon_from).is_file():
            raise SystemExit(f"error: --muon-from {args.muon_from!r} is not a file")
        spec_ = importlib.util.spec_from_file_location("muon_from", args.muon_from)
        other_muon = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(other_muon)
        specs["muon_from"] = specs["muon"]

    B, T = protocol.BATCH_SIZE, protocol.BLOCK_SIZE
    gen = torch.Generator().manual_seed(args.seed)
    n = args.warmup + args.steps
    batches = [torch.randint(0, protocol.GPT2_VOCAB_SIZE, (2, B, T), generator=gen).to(device) for _ in range(n)]
    counts = np.bincount(np.minimum(np.random.default_rng(args.seed).zipf(1.3, 300_000) - 1, protocol.VOCAB_SIZE - 1),
                         minlength=protocol.VOCAB_SIZE)  # Zipf-like stand-in for train.bin's counts (timing only)

    runs = {}
    for name, spec in specs.items():
        torch.manual_seed(args.seed)
        model = GPT(spec.model.replace(block_size=T), token_counts=counts).to(device)
        model.train()
        if name == "muon_from":  # the other file's Muon, with the same parameter groups as recipes.build_optimizer
            opt = other_muon.build(model, spec.recipe, recipes.lr_ratios(spec.model, spec.recipe))
        else:
            opt = recipes.build_optimizer(model, spec.recipe, device_type=device.split(":")[0],
                                          fused=False if name == "adamw_loop" else None)
        x, y = batches[0]
        fused_loss(model, x, y).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        runs[name] = (model, opt, spec.recipe, grads)

    def opt_step(name, i):
        model, opt, recipe, grads = runs[name]
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        synchronize(device)
        t0 = time.perf_counter()
        recipes.optimizer_step(model, opt, recipe, i)
        synchronize(device)
        return 1000 * (time.perf_counter() - t0)

    def train_step(name, i):
        model, opt, recipe, _ = runs[name]
        x, y = batches[i]
        synchronize(device)
        t0 = time.perf_counter()
        fused_loss(model, x, y).backward()
        recipes.optimizer_step(model, opt, recipe, i)
        synchronize(device)
        return 1000 * (time.perf_counter() - t0)

    load_before = os.getloadavg()
    for name in specs:
        for i in range(args.warmup):
            opt_step(name, i)
            train_step(name, i)
    times = {(kind, name): [] for kind in ("opt", "train") for name in specs}
    for i in range(args.warmup, n):
        for name in specs:
            times[("opt", name)].append(opt_step(name, i))
        for name in specs:
            times[("train", name)].append(train_step(name, i))
    load_after = os.getloadavg()

    summary = {f"{kind}/{name}": {"median_ms": statistics.median(ts), "min_ms": min(ts), "mean_ms": statistics.fmean(ts)}
               for (kind, name), ts in times.items()}
    n_muon = sum(p.numel() for g in runs["muon"][1].param_groups if g.get("use_muon") for p in g["params"])
    print(f"persona {args.persona}  device {device}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"warmup {args.warmup}  steps {args.steps}  load average {load_before[0]:.2f} -> {load_after[0]:.2f}  "
          f"Muon parameters {n_muon}")
    for kind in ("opt", "train"):
        base = summary[f"{kind}/adamw"]["median_ms"]
        for name in specs:
            s = summary[f"{kind}/{name}"]
            print(f"{kind:>5} {name:>10}: {s['median_ms']:8.2f} ms median  {s['min_ms']:8.2f} min  "
                  f"{name}/adamw = {s['median_ms'] / base:.2f}x")
    if args.json:
        record = {
            "command": shlex.join(["python", "benchmarks/bench_optimizer.py", *(sys.argv[1:] if argv is None else argv)]),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PYTHONPATH")},
            "persona": args.persona, "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": processor_name(),
            "warmup": args.warmup, "steps": args.steps, "load_average_before": load_before,
            "load_average_after": load_after, "ms": summary, "muon_parameters": n_muon,
            "fused_optimizer": {name: recipes.is_fused(runs[name][1]) for name in specs},
            "times_ms": {f"{k}/{n}": v for (k, n), v in times.items()},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
