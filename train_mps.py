"""The frozen DreamTeam protocol: `train()` trains one model and returns (best_vloss, elapsed_min).

`train()` with no arguments runs the nanoGPT baseline exactly as DreamTeam's original does: batch 8, context
64, 4 layers, 4 heads, width 32, 10001 optimizer steps, the loss of one random validation batch every 100
iterations, best_vloss the lowest of the 101. The keyword arguments choose a persona (its components and
recipe), the seed, the data folder and the device; `max_iters_override` exists only for tests and smoke runs.

Besides the protocol figure, the run measures the honest metrics of DESIGN.md (val_loss on the whole
validation set at the end and every 1000 iterations) and writes a JSON record and a safetensors checkpoint
into `out_dir`. The time of those extra evaluations is the harness's, not the candidate's: it is left out of
elapsed_min, which otherwise runs from the start of train().

    python train_mps.py --persona baseline --seed 0 [--max-iters 300] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dreamteam import arguments, data, protocol, registry, runs
from dreamteam.config import ConfigError
from torchport import recipe as recipes
from torchport.evaluate import val_loss
from torchport.model import GPT
from torchport.moe_mlp import moe_layers, take_load_sums, update_router_bias
from torchport.posterior_mean import PosteriorMean
from torchport.succession_objective import training_loss


class NonFiniteLossError(RuntimeError):
    pass


def resolve_device(device: str) -> str:
    """'mps' where it exists; otherwise say so in one line and fall back to CUDA, then the CPU."""
    if device == "mps" and not torch.backends.mps.is_available():
        fallback = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"MPS is not available on this machine; running on {fallback} instead")
        return fallback
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return device


def train(persona="baseline", seed=0, data_dir=None, device_override=None, max_iters_override=None,
          out_dir="runs", progress=True, fast=True):
    t0 = time.time()

    # ---------------- frozen protocol: not to be changed ----------------
    batch_size = 8  # not to be changed
    block_size = 64  # not to be changed
    max_iters = 10001  # not to be changed
    eval_interval = 100  # not to be changed
    n_layer = 4  # not to be changed
    n_head = 4  # not to be changed
    n_embd = 32  # not to be changed
    device = 'mps'  # not to be changed
    # ---------------------------------------------------------------------

    if max_iters_override is not None:  # tests and smoke runs only; a protocol run never sets it
        max_iters = int(max_iters_override)
    device = resolve_device(device_override or device)
    spec = registry.get(persona) if isinstance(persona, str) else persona
    config = spec.model.replace(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)

    dataset = data.load(data_dir, os.environ)  # loaded once into memory
    train_data = torch.from_numpy(dataset.train.astype(np.int64)).to(device)
    val_data = torch.from_numpy(dataset.val.astype(np.int64)).to(device)
    train_sampler = data.BatchSampler(dataset.train, batch_size, block_size, seed=(seed, 0))
    val_sampler = data.BatchSampler(dataset.val, batch_size, block_size, seed=(seed, 1))
    # every batch offset of the run drawn up front (the same streams, so the same batches as drawing them
    # one by one) and moved to the device once: no step waits on a host-to-device copy
    offsets = {
        "train": torch.from_numpy(np.stack([train_sampler.offsets() for _ in range(max_iters)])).to(device),
        "val": torch.from_numpy(np.stack([val_sampler.offsets() for _ in range(0, max_iters, eval_interval)])).to(device),
    }
    arange_T = torch.arange(block_size, device=device)
    val_x, val_y = data.val_windows(dataset.val, block_size)

    def get_batch(split, it):
        source = train_data if split == "train" else val_data
        row = it if split == "train" else it // eval_interval
        ix = offsets[split][row][:, None] + arange_T
        return source[ix], source[ix + 1]

    torch.manual_seed(seed)
    model = GPT(config, token_counts=data.token_counts(dataset.train, config.vocab_size)).to(device)
    # fast: also AdamW's fused kernel where torch has one; eager (fast=False): the original code's AdamW form
    device_type = device.split(":")[0]
    optimizer = recipes.build_optimizer(model, spec.recipe, device_type=device_type,
                                        fused=None if fast else recipes.reference_fused(device_type))
    # posterior_mean: every evaluation and the checkpoint use the averaged weights; the raw ones train
    averaged = PosteriorMean(model, config.posterior_mean_decay) if config.has("posterior_mean") else None
    eval_model = averaged.module if averaged is not None else model

    name = runs.run_name(spec.name, seed, device.split(":")[0], max_iters)
    out_dir = Path(out_dir)
    record = {
        "name": name, "persona": spec.name, "seed": seed, "device": device, "max_iters": max_iters,
        "batch_size": batch_size, "block_size": block_size, "n_params": sum(p.numel() for p in model.parameters()),
        "config": spec.model, "recipe": spec.recipe, "data_dir": str(dataset.data_dir),
        "versions": runs.versions(torch=torch.__version__), "command": " ".join(sys.argv), "status": "running",
        "fast": fast, "fused_optimizer": recipes.is_fused(optimizer),
        "accelerator": torch.cuda.get_device_name(device) if device_type == "cuda" else None,
        # the 1-minute load average at every checkpoint evaluation: a load above the core count means the
        # run shared the machine, and its timings (elapsed_min, ms_per_iter) are inflated
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "load_avg": [],
    }
    if moe_layers(model):
        # moe_mlp: tokens routed to each expert of each layer, summed over each 100 steps (recorded at the
        # protocol's evaluations, a 4 x 8 copy; the checkpoint evaluations print max/mean)
        record["expert_load"] = []

    best_vloss = float("inf")
    vloss_curve, val_curve = [], []
    harness_s = 0.0  # time spent on the honest metrics, excluded from elapsed_min

    def checkpoint_eval(steps_done):
        nonlocal harness_s
        t = time.time()
        if hasattr(os, "getloadavg"):
            record["load_avg"].append(round(os.getloadavg()[0], 2))
        val_curve.append((steps_done, val_loss(eval_model, val_x, val_y, device)))
        if "expert_load" in record:
            loads = record["expert_load"][-1]["load"] if record["expert_load"] else {}
            # max/mean load over experts, per layer, over the last 100 steps: 1.0 is perfect balance
            tqdm.write(f"step {steps_done}: expert load max/mean per layer "
                       + " ".join(f"{max(v) / (sum(v) / len(v)):.2f}" for v in loads.values()))
        harness_s += time.time() - t

    try:
        loop_start = time.time()
        model.train()
        for it in tqdm(range(max_iters), disable=not progress, mininterval=2.0, desc=spec.name):
            if it % eval_interval == 0:
                eval_model.eval()
                with torch.no_grad():
                    xb, yb = get_batch("val", it)
                    _, vloss = eval_model(xb, yb)  # plain cross-entropy, whatever the training objective
                vloss = vloss.item()
                model.train()
                if not math.isfinite(vloss):
                    raise NonFiniteLossError(f"validation loss is {vloss} at iteration {it}")
                best_vloss = min(best_vloss, vloss)
                vloss_curve.append((it, vloss))
                if "expert_load" in record and it > 0:  # loads of the 100 steps since the last evaluation
                    record["expert_load"].append({"it": it, "load": take_load_sums(model)})
                if progress or it % protocol.CHECKPOINT_INTERVAL == 0:
                    tqdm.write(f"step {it}: val loss {vloss:.4f}, best {best_vloss:.4f}")

            xb, yb = get_batch("train", it)
            # fast: the same loss without the B x T x V logits (torchport/fast.py); eager: the reference.
            # The training objective (cross-entropy, or succession_objective's) is the training step's only.
            loss = training_loss(model, xb, yb, fast=fast)
            loss.backward()
            recipes.optimizer_step(model, optimizer, spec.recipe, it)
            update_router_bias(model)  # moe_mlp's balancing bias, outside the gradient (no-op without it)
            if averaged is not None:
                averaged.update()

            if (it + 1) % protocol.CHECKPOINT_INTERVAL == 0 and it + 1 < max_iters:
                checkpoint_eval(it + 1)
        if "expert_load" in record:  # the steps since the last evaluation
            last = take_load_sums(model)
            if last:
                record["expert_load"].append({"it": max_iters, "load": last})
        loop_s = time.time() - loop_start - harness_s
        elapsed_min = (time.time() - t0 - harness_s) / 60
        checkpoint_eval(max_iters)
    except BaseException as e:
        runs.record_failure(out_dir / f"{name}.json", record, e, vloss_curve, val_curve)
        raise

    from safetensors.torch import save_model

    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(eval_model, str(out_dir / f"{name}.safetensors"))  # the averaged weights where posterior_mean is on
    path = runs.record_success(out_dir / f"{name}.json", record, best_vloss=best_vloss, vloss_curve=vloss_curve,
                               val_curve=val_curve, elapsed_min=elapsed_min, loop_s=loop_s, harness_s=harness_s,
                               checkpoint=f"{name}.safetensors")
    if progress:
        print(f"{runs.summary(record)}  record {path}")
    return float(best_vloss), float(elapsed_min)


def main(argv=None) -> int:
    ap = arguments.Parser(description="Train one persona under the frozen DreamTeam protocol.",
                          formatter_class=arguments.HelpFormatter)  # one-line errors, defaults in --help
    ap.add_argument("--persona", default="baseline", help=f"one of {sorted(registry.PERSONAS)}")
    ap.add_argument("--seed", type=arguments.seed, default=0, help="seed of the weights and of the batches")
    ap.add_argument("--data-dir", default=None, help=f"default: ${data.DATA_ENV_VAR}, else ./data/shakespeare, else the "
                    "shipped tiny Shakespeare, prepared once into ~/.cache/dreamteam/shakespeare")
    ap.add_argument("--device", type=arguments.device, default=None,
                    help="default: the protocol's 'mps' (falls back to cuda, then cpu)")
    ap.add_argument("--max-iters", type=arguments.positive_int, default=None,
                    help="smoke runs only: fewer iterations than the protocol's 10001 (default: 10001)")
    ap.add_argument("--out-dir", default="runs", help="folder of the run record and checkpoint")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--eager", action="store_true",
                    help="train with the plain eager loss model(x, y) and nanoGPT's AdamW (the reference; fused on CUDA "
                         "only) instead of the fused chunked loss and fused AdamW")
    args = ap.parse_args(argv)
    runs.raise_on_sigterm()
    try:
        best_vloss, elapsed_min = train(args.persona, args.seed, args.data_dir, args.device, args.max_iters,
                                        args.out_dir, progress=not args.no_progress, fast=not args.eager)
    except (registry.UnknownPersonaError, data.DataError, ConfigError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"best_vloss={best_vloss:.4f} elapsed_min={elapsed_min:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
