"""One prepared check of a device: does the PyTorch port compute the CPU's numbers there, and how fast is it.
One command, one JSON file; a few minutes on a GPU with the defaults.

    python benchmarks/device_check.py --device cuda --out device_check.json      # a CUDA GPU
    python benchmarks/device_check.py --device mps --out device_check.json       # an Apple GPU
    python benchmarks/device_check.py --device cpu --out dc.json --bench-steps 5 --run-iters 201 --short-iters 101

Sections of the JSON (every relative difference is max|a - b| / max|b| over one tensor, b the reference):

  device        the device, its name, torch and its CUDA, the host processor, PYTORCH_ENABLE_MPS_FALLBACK
  personas      per persona: one training step (the fast loss, backward, the recipe's optimizer step) of the same
                initial model on the same batch, on the device and on the CPU, float32: the loss and every
                gradient within REL_TOL (`ok`); the parameters after the step are reported beside it
  fused_loss    torchport.fast.linear_cross_entropy against F.cross_entropy of the full logits, on the device:
                the loss and the gradients of h and W within REL_TOL
  bench         the baseline's train step, ms per step (median, min) for bench_step's `eager` and `fast` and
                the CUDA graph step (`graph`, CUDA only), interleaved and synchronized (benchmarks/bench_step.py)
  runs          train() of the baseline for --short-iters and --run-iters iterations (fast, and with the CUDA
                graph on CUDA): elapsed_min, ms_per_iter, best_vloss, and the full 10001-iteration run projected
                by the line through the two: elapsed = fixed (data, model, warm-up, capture) + per-iteration x N
  graph         per persona the graph step can take: --graph-steps steps of it against the eager step on the
                device, from the same weights on the same batches (captured on CUDA; elsewhere the same
                static-buffer step uncaptured): the largest relative difference of the losses and the weights

Exit status 0 when every comparison is within its tolerance, 1 when one is not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import bench_step  # noqa: E402
import train_mps  # noqa: E402
from dreamteam import data, protocol, registry  # noqa: E402
from dreamteam.components import ngram_memory  # noqa: E402
from dreamteam.runs import processor_name  # noqa: E402
from torchport import graph_step  # noqa: E402
from torchport import recipe as recipes  # noqa: E402
from torchport.fast import DEFAULT_CHUNK, linear_cross_entropy  # noqa: E402
from torchport.model import GPT  # noqa: E402
from torchport.step import TrainStep, posterior_mean_of  # noqa: E402
from torchport.succession_objective import training_loss  # noqa: E402

REL_TOL = 1e-5  # float32, device against the CPU (docs/protocol.md's parity tolerance)
GRAPH_TOL = 1e-4  # the graph step against the eager step over --graph-steps steps (float32 lr; see graph)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|, a on any device, b the reference; 0 where both are zero."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    diff, scale = (a - b).abs().max().item(), b.abs().max().item()
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def protocol_config(spec):
    return spec.model.replace(n_layer=protocol.N_LAYER, n_head=protocol.N_HEAD, n_embd=protocol.N_EMBD,
                              block_size=protocol.BLOCK_SIZE)


def device_info(device: str) -> dict:
    kind = device.split(":")[0]
    accelerator = (torch.cuda.get_device_name(device) if kind == "cuda"
                   else "Apple GPU (MPS)" if kind == "mps" else None)
    return {"device": device, "accelerator": accelerator, "processor": processor_name(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "env": {"PYTORCH_ENABLE_MPS_FALLBACK": os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")}}


def model_of(cfg, train_ids) -> GPT:
    """The model as train_mps.py builds it: the frequency-built components (good_turing_prior, adaptive_softmax,
    ngram_memory) from the training ids."""
    return GPT(cfg, token_counts=data.token_counts(train_ids, cfg.vocab_size),
               ngram_stats=ngram_memory.stats_for(cfg, train_ids))


def check_persona(name, device, train_ids, batch, seed) -> dict:
    """One training step on the device and on the CPU from the same weights and batch."""
    spec = registry.get(name)
    cfg = protocol_config(spec)
    torch.manual_seed(seed)
    cpu_model = model_of(cfg, train_ids)
    dev_model = copy.deepcopy(cpu_model).to(device)
    out = {}
    for side, model, dev in (("cpu", cpu_model, "cpu"), ("device", dev_model, device)):
        model.train()
        optimizer = recipes.build_optimizer(model, spec.recipe, device_type=dev.split(":")[0])
        x, y = (t.to(dev) for t in batch)
        grads = {}

        def keep_grads(it, model, loss, into=grads):  # before the optimizer step zeroes them
            into.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

        loss = TrainStep(model, optimizer, spec.recipe, fast=True, after_backward=keep_grads)(x, y, 0)
        out[side] = (loss, grads, {n: p.detach() for n, p in model.named_parameters()})
    (l_cpu, g_cpu, p_cpu), (l_dev, g_dev, p_dev) = out["cpu"], out["device"]
    grad_rel = {n: rel(g_dev[n], g_cpu[n]) for n in g_cpu}
    missing = sorted(set(g_cpu) ^ set(g_dev))
    param_rel = {n: rel(p_dev[n], p_cpu[n]) for n in p_cpu}
    worst_grad = max(grad_rel, key=grad_rel.get)
    worst_param = max(param_rel, key=param_rel.get)
    loss_rel = rel(l_dev, l_cpu)
    return {"loss_cpu": l_cpu.item(), "loss_device": l_dev.item(), "loss_rel": loss_rel,
            "grad_rel_max": grad_rel[worst_grad], "grad_rel_worst": worst_grad, "grads": len(grad_rel),
            "grads_missing": missing, "params_after_step_rel_max": param_rel[worst_param],
            "params_after_step_worst": worst_param,
            "ok": loss_rel <= REL_TOL and grad_rel[worst_grad] <= REL_TOL and not missing}


def check_fused_loss(device, seed) -> dict:
    """The chunked linear cross-entropy against F.cross_entropy of the full B*T x V logits, on the device."""
    gen = torch.Generator().manual_seed(seed)
    N, D, V = protocol.BATCH_SIZE * protocol.BLOCK_SIZE, protocol.N_EMBD, protocol.VOCAB_SIZE
    h0 = torch.randn(N, D, generator=gen)
    W0 = torch.randn(V, D, generator=gen) * 0.5
    t = torch.randint(0, V, (N,), generator=gen).to(device)
    results = []
    for fn in (lambda h, W: linear_cross_entropy(h, W, t, DEFAULT_CHUNK), lambda h, W: F.cross_entropy(h @ W.T, t)):
        # a copy each: on the CPU .to() returns the same tensor, whose .grad the second backward would add to
        h, W = (a.to(device, copy=True).requires_grad_() for a in (h0, W0))
        loss = fn(h, W)
        loss.backward()
        results.append((loss.detach(), h.grad, W.grad))
    (l_f, gh_f, gW_f), (l_r, gh_r, gW_r) = results
    out = {"loss_fused": l_f.item(), "loss_reference": l_r.item(), "loss_rel": rel(l_f, l_r),
           "grad_h_rel": rel(gh_f, gh_r), "grad_W_rel": rel(gW_f, gW_r), "chunk": DEFAULT_CHUNK}
    out["ok"] = max(out["loss_rel"], out["grad_h_rel"], out["grad_W_rel"]) <= REL_TOL
    return out


def bench(device, warmup, steps, seed) -> dict:
    """The baseline's step: bench_step's eager and fast variants and the CUDA graph step, interleaved."""
    spec = registry.get("baseline")
    cfg = protocol_config(spec)
    B, T = protocol.BATCH_SIZE, protocol.BLOCK_SIZE
    variants = bench_step.make_variants(types.SimpleNamespace(chunk=DEFAULT_CHUNK, sweep=[], compile=False, device=device))
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, protocol.GPT2_VOCAB_SIZE, (2, B, T), generator=gen).to(device)
               for _ in range(warmup + steps)]
    torch.manual_seed(seed)
    init = GPT(cfg).state_dict()
    steppers, skipped = {}, {}
    for name in ("eager", "fast", "graph"):
        model = GPT(cfg).to(device)
        model.load_state_dict(init)
        model.train()
        optimizer = bench_step.variant_optimizer(model, spec.recipe, "fast" if name == "graph" else name, device)
        if name == "graph":
            try:
                steppers[name] = graph_step.GraphStep(model, optimizer, spec.recipe, variants["fast"], (B, T), device)
            except graph_step.GraphUnavailableError as e:
                skipped[name] = str(e)
            continue
        steppers[name] = (lambda m, o, f: lambda x, y, it: (f(m, x, y).backward(),
                                                           recipes.optimizer_step(m, o, spec.recipe, it)))(
            model, optimizer, variants[name])
    times = {name: [] for name in steppers}
    for i, (x, y) in enumerate(batches):
        for name, step in steppers.items():
            bench_step.synchronize(device)
            t0 = time.perf_counter()
            step(x, y, i)
            bench_step.synchronize(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - t0))
    ms = {name: {"median_ms": statistics.median(ts), "min_ms": min(ts)} for name, ts in times.items()}
    for name, why in skipped.items():
        ms[name] = {"median_ms": None, "min_ms": None, "unavailable": why}
    return {"warmup": warmup, "steps": steps, "ms_per_step": ms, "times_ms": times}


def baseline_runs(device, data_dir, seed, short_iters, long_iters, graph: bool, out_dir) -> dict:
    """train() for short_iters and long_iters iterations; the full run projected by the line through the two."""
    points = {}
    for n in (short_iters, long_iters):
        folder = Path(out_dir) / f"{'graph' if graph else 'fast'}_{n}"
        train_mps.train("baseline", seed, data_dir, device, n, folder, progress=False, fast=True, graph=graph)
        (path,) = folder.glob("*.json")
        rec = json.loads(path.read_text())
        points[n] = {k: rec[k] for k in ("elapsed_min", "ms_per_iter", "harness_eval_s", "best_vloss",
                                         "val_loss", "cuda_graph")}
    e1, e2 = (60 * points[n]["elapsed_min"] for n in (short_iters, long_iters))
    per_iter_s = (e2 - e1) / (long_iters - short_iters)
    fixed_s = e2 - per_iter_s * long_iters
    return {"iters": [short_iters, long_iters], "runs": {str(n): p for n, p in points.items()},
            "per_iter_ms": 1000 * per_iter_s, "fixed_s": fixed_s,
            "projected_elapsed_s": fixed_s + per_iter_s * protocol.MAX_ITERS,
            "crude_projection_s": e2 * protocol.MAX_ITERS / long_iters}


def graph_check(name, device, data_split, steps, seed) -> dict:
    """`steps` steps of the graph step against the eager step from the same weights on the same batches."""
    spec = registry.get(name)
    cfg = protocol_config(spec)
    graph_step.check_graphable(cfg, device, capture=False)
    capture = device.startswith("cuda")
    sampler = data.BatchSampler(data_split, protocol.BATCH_SIZE, protocol.BLOCK_SIZE, seed=(seed, 0))
    batches = [tuple(torch.from_numpy(a).to(device) for a in sampler()) for _ in range(steps)]
    torch.manual_seed(seed)
    models = [model_of(cfg, data_split).to(device) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    losses, finals = [], []
    for kind, model in zip(("eager", "graph"), models):
        model.train()
        optimizer = recipes.build_optimizer(model, spec.recipe, device_type=device.split(":")[0])
        averaged = posterior_mean_of(model)
        if kind == "graph":
            step = graph_step.GraphStep(model, optimizer, spec.recipe, lambda m, x, y: training_loss(m, x, y, fast=True),
                                        (protocol.BATCH_SIZE, protocol.BLOCK_SIZE), device, averaged=averaged,
                                        capture=capture)
        else:
            step = TrainStep(model, optimizer, spec.recipe, fast=True, averaged=averaged)
        losses.append(torch.stack([step(x, y, it).clone() for it, (x, y) in enumerate(batches)]))
        finals.append((averaged.module if averaged is not None else model).state_dict())
    weight_rel = max(rel(finals[1][k], finals[0][k]) for k in finals[0])
    loss_rel = rel(losses[1], losses[0])
    return {"captured": capture, "steps": steps, "loss_rel": loss_rel, "weights_rel": weight_rel,
            "first_loss": losses[0][0].item(), "last_loss": losses[0][-1].item(),
            "ok": loss_rel <= GRAPH_TOL and weight_rel <= GRAPH_TOL}


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: cuda, else mps, else cpu)")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--data-dir", default=None, help=f"train.bin / val.bin (default: ${data.DATA_ENV_VAR})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--personas", nargs="*", default=sorted(registry.PERSONAS), metavar="NAME")
    ap.add_argument("--bench-warmup", type=int, default=5)
    ap.add_argument("--bench-steps", type=int, default=50)
    ap.add_argument("--graph-steps", type=int, default=20)
    ap.add_argument("--run-iters", type=int, default=2001, help="the longer baseline run (0: no runs)")
    ap.add_argument("--short-iters", type=int, default=1001, help="the shorter run, for the projection's line")
    args = ap.parse_args(argv)
    try:
        device = args.device or default_device()
        kind = device.split(":")[0]
        if kind == "mps" and not torch.backends.mps.is_available():
            raise train_mps.DeviceError("device 'mps' requested but MPS is not available on this machine")
        device = train_mps.resolve_device(device)
        device = "mps" if kind == "mps" else device  # bench_step synchronizes 'mps' by that name
        unknown = [p for p in args.personas if p not in registry.PERSONAS]
        if unknown:
            raise ValueError(f"unknown persona(s) {unknown}; expected some of {sorted(registry.PERSONAS)}")
        if min(args.bench_steps, args.graph_steps) < 1 or args.bench_warmup < 0:
            raise ValueError("--bench-steps and --graph-steps must be >= 1, --bench-warmup >= 0")
        if args.run_iters and not 0 < args.short_iters < args.run_iters:
            raise ValueError(f"--short-iters {args.short_iters} must be in [1, --run-iters {args.run_iters})")
        dataset = data.load(args.data_dir, os.environ)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    t_start = time.time()
    sampler = data.BatchSampler(dataset.train, protocol.BATCH_SIZE, protocol.BLOCK_SIZE, seed=(args.seed, 0))
    batch = tuple(torch.from_numpy(a) for a in sampler())
    report = {"command": shlex.join(["python", "benchmarks/device_check.py", *(sys.argv[1:] if argv is None else argv)]),
              "rel": "max|a - b| / max|b| per tensor, b the reference (the CPU; F.cross_entropy; the eager step)",
              "rel_tol": REL_TOL, "graph_tol": GRAPH_TOL, "seed": args.seed, "device": device_info(device)}

    def section(name, fn):
        t = time.time()
        print(f"{name} ...", flush=True)
        report[name] = fn()
        report.setdefault("section_s", {})[name] = round(time.time() - t, 2)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))  # what is measured so far survives a stop

    section("fused_loss", lambda: check_fused_loss(device, args.seed))
    section("personas", lambda: {p: check_persona(p, device, dataset.train, batch, args.seed) for p in args.personas})
    section("bench", lambda: bench(device, args.bench_warmup, args.bench_steps, args.seed))
    if args.run_iters:
        with tempfile.TemporaryDirectory() as tmp:
            modes = [False, True] if kind == "cuda" else [False]
            section("runs", lambda: {("graph" if g else "fast"): baseline_runs(
                device, args.data_dir, args.seed, args.short_iters, args.run_iters, g, tmp) for g in modes})

    def graphs():
        out = {}
        for p in args.personas:
            try:
                out[p] = graph_check(p, device, dataset.train, args.graph_steps, args.seed)
            except graph_step.GraphUnavailableError as e:
                out[p] = {"unavailable": str(e)}
            except Exception as e:  # a capture that fails (a host sync or upload in the step) is a finding
                out[p] = {"error": f"{type(e).__name__}: {e}".splitlines()[0], "ok": False}
        return out

    section("graph", graphs)
    checks = ([report["fused_loss"]["ok"]] + [r["ok"] for r in report["personas"].values()]
              + [r["ok"] for r in report["graph"].values() if "ok" in r])
    report["ok"] = all(checks)
    report["wall_s"] = round(time.time() - t_start, 1)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for p, r in report["personas"].items():
        print(f"{p:>22}: loss rel {r['loss_rel']:.1e}  grad rel {r['grad_rel_max']:.1e} ({r['grad_rel_worst']})  "
              f"{'ok' if r['ok'] else 'FAIL'}")
    f = report["fused_loss"]
    print(f"{'fused loss':>22}: loss rel {f['loss_rel']:.1e}  grad h {f['grad_h_rel']:.1e}  grad W {f['grad_W_rel']:.1e}")
    print("bench ms/step median: " + "  ".join(f"{k} {v['median_ms']:.2f}" if v["median_ms"] is not None else f"{k} n/a"
                                             for k, v in report["bench"]["ms_per_step"].items()))
    for mode, r in report.get("runs", {}).items():
        print(f"baseline {mode}: {r['per_iter_ms']:.2f} ms/iter, fixed {r['fixed_s']:.1f} s, "
              f"projected 10001 iterations {r['projected_elapsed_s']:.1f} s")
    print(f"{'all comparisons within tolerance' if report['ok'] else 'SOME COMPARISONS FAILED'}; "
          f"wrote {args.out} ({report['wall_s']} s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
