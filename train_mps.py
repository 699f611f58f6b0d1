"""The frozen DreamTeam protocol: `train()` trains one model and returns (best_vloss, elapsed_min).

`train()` with no arguments runs the nanoGPT baseline exactly as DreamTeam's original does: batch 8, context
64, 4 layers, 4 heads, width 32, 10001 optimizer steps, the loss of one random validation batch every 100
iterations, best_vloss the lowest of the 101. The keyword arguments choose a persona (its components and
recipe), the seed, the data folder and the device; `max_iters_override` exists only for tests and smoke runs;
`graph=True` (--cuda-graph) replays the whole training step as one CUDA graph (torchport/graph_step.py; CUDA only,
an error elsewhere).

Besides the protocol figure, the run measures the honest metrics of docs/protocol.md (val_loss on the whole
validation set at the end and every 1000 iterations) and writes a JSON record and a safetensors checkpoint
into `out_dir`. The time of those extra evaluations is the harness's, not the candidate's: it is left out of
elapsed_min, which otherwise runs from the start of train().

Interrupts keep the work (docs/training.md): at every honest evaluation, and when Ctrl-C or SIGTERM stops the
run (between two iterations), the whole training state goes to one resume checkpoint NAME.resume.pt beside
the record; `--resume NAME.json` continues from it with the same batches and random state, to the numbers an
uninterrupted run gives.

    python train_mps.py --persona baseline --seed 0 [--max-iters 300] [--device cpu] [--threads N]
                        [--set KEY=VALUE ...]
    python train_mps.py --resume runs/NAME.json
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dreamteam import arguments, data, protocol, registry, runs
from dreamteam.components import ngram_memory
from dreamteam.config import ConfigError, GPTConfig, Persona, Recipe
from torchport import recipe as recipes
from torchport.evaluate import val_loss
from torchport.graph_step import GraphStep, GraphUnavailableError, check_graphable
from torchport.model import GPT
from torchport.moe_mlp import moe_layers, take_load_sums
from torchport.posterior_mean import PosteriorMean
from torchport.succession_objective import training_loss


class NonFiniteLossError(RuntimeError):
    pass


DeviceError = arguments.DeviceError  # a device name that is no device, or one this machine lacks


class ResumeError(ValueError):
    """--resume given something that is not a stopped run with a checkpoint; one clear message."""


def resolve_device(device: str) -> str:
    """'mps' (or 'mps:0') where it exists; otherwise say so in one line and fall back to CUDA, then the CPU.
    Any other name is checked by arguments.check_device: a CUDA device this machine lacks, or a name other than
    cpu, cuda[:N], mps[:0], is a DeviceError."""
    if str(device).partition(":")[0] == "mps" and not torch.backends.mps.is_available():
        fallback = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"MPS is not available on this machine; running on {fallback} instead")
        return fallback
    return arguments.check_device(device)


def _sync(device: str) -> None:
    """Wait for the work queued on the device (CUDA, MPS) before a clock read that enters elapsed_min or
    ms_per_iter: their kernels run asynchronously, and a read without it charges queued training work to
    whatever is timed next (the harness's evaluations, which elapsed_min leaves out). A no-op on the CPU."""
    kind = str(device).split(":")[0]
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)
    elif kind == "mps" and torch.backends.mps.is_available():
        torch.mps.synchronize()


def train(persona="baseline", seed=0, data_dir=None, device_override=None, max_iters_override=None,
          out_dir="runs", progress=True, fast=True, graph=False, threads=None, resume=None,
          checkpoint_interval=protocol.CHECKPOINT_INTERVAL):
    """graph: the whole training step as one CUDA graph (CUDA only). threads: torch's thread count (default:
    torch's own). resume: the record (.json) of a stopped run, which then gives every setting but data_dir,
    progress and threads. checkpoint_interval: iterations between the honest evaluations (and resume
    checkpoints); the protocol's 1000, smaller in tests only."""
    # work queued before train() is not this run's (the device type only: the name is checked further down)
    _sync(str(device_override or "mps").split(":")[0])
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

    if resume is not None:  # the stopped run's own settings; its state is loaded once the model is built
        resumed, state = load_resume(resume)
        persona, seed, fast, out_dir = persona_of(resumed), resumed["seed"], resumed.get("fast", True), Path(resume).parent
        data_dir, device_override = data_dir or resumed["data_dir"], resumed["device"]
        max_iters_override, checkpoint_interval = resumed["max_iters"], state["checkpoint_interval"]
    if max_iters_override is not None:  # tests and smoke runs only; a protocol run never sets it
        max_iters = int(max_iters_override)
    if threads is not None:
        torch.set_num_threads(int(threads))
    requested_device = device_override or device
    device = resolve_device(requested_device)
    spec = registry.get(persona) if isinstance(persona, str) else persona
    config = spec.model.replace(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)
    if graph:  # before anything loads: a step that cannot be captured here is an error, not a quiet eager run
        check_graphable(config, device)

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
    model = GPT(config, token_counts=data.token_counts(dataset.train, config.vocab_size),
                ngram_stats=ngram_memory.stats_for(config, dataset.train)).to(device)  # slot: head_mixture
    # fast: also AdamW's fused kernel where torch has one; eager (fast=False): the original code's AdamW form
    device_type = device.split(":")[0]
    optimizer = recipes.build_optimizer(model, spec.recipe, device_type=device_type,
                                        fused=None if fast else recipes.reference_fused(device_type))
    # posterior_mean: every evaluation and the checkpoint use the averaged weights; the raw ones train
    averaged = PosteriorMean(model, config.posterior_mean_decay) if config.has("posterior_mean") else None
    eval_model = averaged.module if averaged is not None else model

    def eager_step(xb, yb, it):
        # fast: the same loss without the B x T x V logits (torchport/fast.py); eager: the reference.
        # The training objective (cross-entropy, or succession_objective's) is the training step's only.
        loss = training_loss(model, xb, yb, fast=fast)
        loss.backward()
        recipes.optimizer_step(model, optimizer, spec.recipe, it)
        model.after_step()  # the components' updates outside the gradient (moe_mlp's balancing bias)
        if averaged is not None:
            averaged.update()
        return loss.detach()

    # graph: the same step captured as one CUDA graph after a few eager warm-up steps (torchport/graph_step.py)
    train_step = GraphStep(model, optimizer, spec.recipe, lambda m, x, y: training_loss(m, x, y, fast=fast),
                           (batch_size, block_size), device, averaged=averaged) if graph else eager_step

    name = runs.run_name(spec.name, seed, device.split(":")[0], max_iters) if resume is None else resumed["name"]
    out_dir = Path(out_dir)
    resume_path = out_dir / f"{name}.resume.pt"
    record = {
        "name": name, "persona": spec.name, "seed": seed, "device": device, "max_iters": max_iters,
        "batch_size": batch_size, "block_size": block_size, "n_params": sum(p.numel() for p in model.parameters()),
        "config": spec.model, "recipe": spec.recipe, "data_dir": str(dataset.data_dir),
        "versions": runs.versions(torch=torch.__version__), "command": " ".join(sys.argv), "status": "running",
        "fast": fast, "fused_optimizer": recipes.is_fused(optimizer), "cuda_graph": bool(graph),
        "requested_device": requested_device,
        # MPS runs an op it lacks on the CPU, silently, where this is 1: such a run's timings are not MPS's
        "env": {"PYTORCH_ENABLE_MPS_FALLBACK": os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")},
        "accelerator": torch.cuda.get_device_name(device) if device_type == "cuda" else None,
        # the 1-minute load average at every checkpoint evaluation: a load above the core count means the
        # run shared the machine, and its timings (elapsed_min, ms_per_iter) are inflated
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "load_avg": [],
        "train_loss_curve": [],  # the mean training loss (the training objective) of each 100 steps
    }
    if moe_layers(model):
        # moe_mlp: tokens routed to each expert of each layer, summed over each 100 steps (recorded at the
        # protocol's evaluations, a 4 x 8 copy; the checkpoint evaluations print max/mean)
        record["expert_load"] = []

    best_vloss = float("inf")
    vloss_curve, val_curve = [], []
    harness_s = 0.0  # time spent on the honest metrics, excluded from elapsed_min
    # the training loss summed on the device, read at the protocol's evaluations where vloss.item() waits anyway
    train_loss_sum, train_loss_steps = torch.zeros((), device=device), 0
    start_it, resumed_loop_s = 0, 0.0
    if resume is not None:
        start_it = state["next_it"]
        best_vloss, vloss_curve, val_curve = state["best_vloss"], state["vloss_curve"], state["val_curve"]
        train_loss_sum, train_loss_steps = state["train_loss_sum"].to(device), state["train_loss_steps"]
        load_training_state(state, model, optimizer, averaged, device)
        record.update({k: state["record"][k] for k in state["record"] if k in record},  # the curves so far
                      command=resumed["command"], resume_checkpoint=resumed["resume_checkpoint"], resume_iteration=start_it,
                      resumed=True, resumed_from=resumed.get("resumed_from", []) + [
                          {"iteration": start_it, "status": resumed["status"], "error": resumed.get("error"),
                           "command": " ".join(sys.argv)}])
        t0 -= state["clock"]["since_t0_s"]  # elapsed_min counts every segment of the run (its setup included)
        harness_s, resumed_loop_s = state["clock"]["harness_s"], state["clock"]["since_loop_start_s"]
        tqdm.write(f"resuming {name} at iteration {start_it} of {max_iters} from {resume_path}")

    def save_resume(next_it):
        """The whole state at the boundary before iteration next_it: resume_checkpoint makes the rest of the run
        what it would have been."""
        nonlocal harness_s
        _sync(device)  # the clock it saves enters elapsed_min when the run resumes
        t = time.time()
        save_resume_checkpoint(resume_path, {
            **training_state(model, optimizer, averaged, device), "next_it": next_it,
            "checkpoint_interval": checkpoint_interval, "best_vloss": best_vloss, "vloss_curve": vloss_curve,
            "val_curve": val_curve, "train_loss_sum": train_loss_sum, "train_loss_steps": train_loss_steps,
            "record": {k: record[k] for k in ("load_avg", "expert_load", "train_loss_curve") if k in record},
            "clock": {"since_t0_s": t - t0, "since_loop_start_s": t - loop_start, "harness_s": harness_s},
        })
        record.update(resume_checkpoint=resume_path.name, resume_iteration=next_it)
        # the record too, so that a run killed outright (SIGKILL, a power cut) can resume from here
        runs.write_json_atomic(out_dir / f"{name}.json", {**record, "vloss_curve": vloss_curve, "val_loss_curve": val_curve})
        _sync(device)
        harness_s += time.time() - t

    def checkpoint_eval(steps_done):
        nonlocal harness_s
        _sync(device)  # the training steps queued so far are the candidate's time, not the harness's
        t = time.time()
        if hasattr(os, "getloadavg"):
            record["load_avg"].append(round(os.getloadavg()[0], 2))
        val_curve.append((steps_done, val_loss(eval_model, val_x, val_y, device)))
        if "expert_load" in record:
            loads = record["expert_load"][-1]["load"] if record["expert_load"] else {}
            # max/mean load over experts, per layer, over the last 100 steps: 1.0 is perfect balance
            tqdm.write(f"step {steps_done}: expert load max/mean per layer "
                       + " ".join(f"{max(v) / (sum(v) / len(v)):.2f}" for v in loads.values()))
        _sync(device)
        harness_s += time.time() - t

    # after every input is checked and loaded, so that a bad one is still one line: the note concerns timings
    busy = runs.busy_machine_note(torch.get_num_threads())
    if busy:
        print(busy, file=sys.stderr)
    signals = runs.DeferredSignals()  # Ctrl-C and SIGTERM stop the loop between two iterations
    try:
        _sync(device)
        loop_start = time.time() - resumed_loop_s
        model.train()
        if resume is not None:  # the random state last, as it was at the boundary (model building draws from it)
            restore_rng(state["rng"], device)
        # a resumed run starts at its checkpoint's iteration: the batches of every iteration were drawn up front
        for it in tqdm(itertools.islice(range(max_iters), start_it, None), initial=start_it, total=max_iters,
                       disable=not progress, mininterval=2.0, desc=spec.name):
            if signals.caught is not None:
                raise runs.Interrupted(signals.caught, it)
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
                if train_loss_steps:
                    record["train_loss_curve"].append((it, train_loss_sum.item() / train_loss_steps))
                    train_loss_sum, train_loss_steps = torch.zeros((), device=device), 0
                if "expert_load" in record and it > 0:  # loads of the 100 steps since the last evaluation
                    record["expert_load"].append({"it": it, "load": take_load_sums(model)})
                if progress or it % protocol.CHECKPOINT_INTERVAL == 0:
                    tqdm.write(f"step {it}: val loss {vloss:.4f}, best {best_vloss:.4f}")

            xb, yb = get_batch("train", it)
            loss = train_step(xb, yb, it)
            train_loss_sum, train_loss_steps = train_loss_sum + loss, train_loss_steps + 1

            if (it + 1) % checkpoint_interval == 0 and it + 1 < max_iters:
                checkpoint_eval(it + 1)
                save_resume(it + 1)
        if train_loss_steps:  # the steps since the last evaluation
            record["train_loss_curve"].append((max_iters, train_loss_sum.item() / train_loss_steps))
        if "expert_load" in record:  # the steps since the last evaluation
            last = take_load_sums(model)
            if last:
                record["expert_load"].append({"it": max_iters, "load": last})
        _sync(device)
        t_end = time.time()
        loop_s = t_end - loop_start - harness_s
        elapsed_min = (t_end - t0 - harness_s) / 60
        checkpoint_eval(max_iters)
    except runs.Interrupted as e:  # at the boundary before iteration e.iteration: save all, then let it go on
        save_resume(e.iteration)
        path = runs.record_failure(out_dir / f"{name}.json", record, e, vloss_curve, val_curve)
        print(f"{e}: record {path}, checkpoint {resume_path}; continue with "
              f"`python train_mps.py --resume {path}`", file=sys.stderr)
        signals.restore()  # the caller's handler takes it from here: KeyboardInterrupt, its SIGTERM handler, exit
        raise
    except BaseException as e:
        path = runs.record_failure(out_dir / f"{name}.json", record, e, vloss_curve, val_curve)
        if isinstance(e, (KeyboardInterrupt, runs.Terminated)):  # a second Ctrl-C: no checkpoint of this iteration
            saved = (f"resume from its checkpoint of iteration {record['resume_iteration']} with "
                     f"`python train_mps.py --resume {path}`" if "resume_iteration" in record else "no checkpoint yet")
            print(f"stopped at once ({runs.error_text(e)}): record {path}; {saved}", file=sys.stderr)
            e.run_reported = True
        signals.restore()
        raise

    from safetensors.torch import save_model

    try:  # a signal held back during the final evaluation is handed on once the run is saved
        out_dir.mkdir(parents=True, exist_ok=True)
        save_model(eval_model, str(out_dir / f"{name}.safetensors"))  # the averaged weights where posterior_mean is on
        runs.honour_umask(out_dir / f"{name}.safetensors")
        for key in ("resume_checkpoint", "resume_iteration"):
            record.pop(key, None)
        path = runs.record_success(out_dir / f"{name}.json", record, best_vloss=best_vloss, vloss_curve=vloss_curve,
                                   val_curve=val_curve, elapsed_min=elapsed_min, loop_s=loop_s, harness_s=harness_s,
                                   checkpoint=f"{name}.safetensors")
        resume_path.unlink(missing_ok=True)  # the finished run needs no resume checkpoint
        print(f"{runs.summary(record)}  record {path}")
    finally:
        signals.restore()
    return float(best_vloss), float(elapsed_min)


def save_resume_checkpoint(path: Path, state: dict) -> None:
    """torch.save of the state (tensors, numbers, lists, dicts only: weights_only loading reads it back), written
    atomically over the run's one resume checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with runs.atomic_file(path, "wb") as f:
        torch.save(state, f)


def training_state(model, optimizer, averaged, device: str) -> dict:
    """What of the model and its training a resume checkpoint keeps: weights and buffers (moe_mlp's router bias),
    the optimizer's state (AdamW's moments, Muon's momentum), posterior_mean's averaged weights and step count,
    moe_mlp's expert loads since the last evaluation, and torch's random state (dropout)."""
    device_type = device.split(":")[0]
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "averaged": averaged.module.state_dict() if averaged is not None else None,
        "averaged_steps": averaged.steps if averaged is not None else 0,
        "moe_load_sums": {layer: m.load_sum for layer, m in moe_layers(model)},
        "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device_type == "cuda" else None,
                "mps": torch.mps.get_rng_state() if device_type == "mps" else None},
    }


def load_training_state(state: dict, model, optimizer, averaged, device: str) -> None:
    """training_state's model, optimizer, averaged weights and load sums put back (the random state is put back
    by restore_rng, last, when nothing else will draw from it before the loop)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if averaged is not None:
        averaged.module.load_state_dict(state["averaged"])
        averaged.steps = state["averaged_steps"]
    layers = dict(moe_layers(model))
    for layer, load_sum in state["moe_load_sums"].items():
        layers[layer].load_sum = None if load_sum is None else load_sum.to(device)


def restore_rng(rng: dict, device: str) -> None:
    torch.set_rng_state(rng["cpu"])
    if rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)
    if rng.get("mps") is not None:
        torch.mps.set_rng_state(rng["mps"])


def persona_of(record: dict) -> Persona:
    """The persona a run record was trained as, from its own config and recipe (a registry name, an ablation
    label or a `--set` variant alike)."""
    return Persona(record["persona"], GPTConfig.from_fields(record.get("config")), Recipe.from_fields(record.get("recipe")))


def load_resume(record_path) -> tuple[dict, dict]:
    """The record of a stopped run and its resume checkpoint's state; ResumeError where there is nothing to resume."""
    path = Path(record_path)
    try:
        resumed = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResumeError(f"--resume {path}: no such file (expected the run record NAME.json of a stopped run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResumeError(f"--resume {path}: not a readable run record ({e})") from None
    if not isinstance(resumed, dict) or not {"name", "persona", "seed", "device", "max_iters", "status"} <= resumed.keys():
        raise ResumeError(f"--resume {path}: not a run record of train_mps.py")
    if resumed["status"] == "ok":
        raise ResumeError(f"--resume {path}: the run finished; there is nothing to resume")
    if not resumed.get("resume_checkpoint"):
        raise ResumeError(f"--resume {path}: the run stopped before its first checkpoint (written at every honest "
                          f"evaluation and when it is interrupted); start it again")
    checkpoint = path.parent / resumed["resume_checkpoint"]
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ResumeError(f"--resume {path}: its checkpoint {checkpoint} is missing") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: torch raises several kinds
        raise ResumeError(f"--resume {path}: its checkpoint {checkpoint} is not readable ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return resumed, state


def main(argv=None) -> int:
    ap = arguments.Parser(description="Train one persona under the frozen DreamTeam protocol.",
                          formatter_class=arguments.HelpFormatter)  # one-line errors, defaults in --help
    runs.add_run_options(ap)  # --persona, --seed, --data-dir, --device, --max-iters, --out-dir, ..., --resume
    ap.add_argument("--eager", action="store_true",
                    help="train with the plain eager loss model(x, y) and nanoGPT's AdamW (the reference; fused on CUDA "
                         "only) instead of the fused chunked loss and fused AdamW")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="capture the whole training step as one CUDA graph and replay it (CUDA only: elsewhere an "
                         "error; not with muon or moe_mlp, whose steps keep Python-side state)")
    args = ap.parse_args(argv)
    from dreamteam.settings import SettingError, parse_settings, with_settings

    if args.resume is not None:  # the stopped run's settings are in its record
        given = [f"--{k.replace('_', '-')}" for k in ("persona", "seed", "device", "max_iters", "out_dir", "eager", "set")
                 if getattr(args, k) != ap.get_default(k)]
        if given:
            print(f"error: --resume continues the run with its recorded settings; drop {', '.join(given)}", file=sys.stderr)
            return 2
    runs.raise_on_sigterm()
    try:
        # a registered name or a label with components switched on and off ('baseline+rope', registry.from_label)
        persona = with_settings(registry.from_label(args.persona), parse_settings(args.set))  # '--set k=v': NAME@k=v
        best_vloss, elapsed_min = train(persona, args.seed, args.data_dir, args.device, args.max_iters,
                                        args.out_dir, progress=not args.no_progress, fast=not args.eager,
                                        graph=args.cuda_graph, threads=args.threads, resume=args.resume)
    except (registry.UnknownPersonaError, data.DataError, ConfigError, NonFiniteLossError, DeviceError,
            GraphUnavailableError, SettingError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, runs.Terminated) as e:  # the run said where it stopped and what it saved
        if not runs.reported(e):
            print("interrupted before training began: nothing was saved", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    print(f"best_vloss={best_vloss:.4f} elapsed_min={elapsed_min:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
