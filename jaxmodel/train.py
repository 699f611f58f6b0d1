"""The frozen DreamTeam protocol in JAX on the CPU: the twin of `train_mps.py`, for prototyping.

`train()` runs the same protocol as `train_mps.train()`: batch 8, context 64, 4 layers, 4 heads, width 32,
`max_iters` optimizer steps, the loss of one random validation batch every 100 iterations (before that
iteration's step), best_vloss the lowest of them. The batches come from the same seeded samplers as the torch
loop's, so both loops see the same tokens. The whole train step (forward, loss, gradient, optax update) is one
jitted function.

The honest metrics of docs/protocol.md are measured too: val_loss, the mean cross-entropy over every token of the
validation set cut into 563 windows of 64, after every 1000 steps and at the end. Their time is left out of
elapsed_min and ms_per_iter; compile_s records the first step (tracing and XLA compilation included).

    python -m jaxmodel.train --persona baseline --seed 0 [--max-iters 300] [--out-dir runs]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from tqdm import tqdm

from dreamteam import config as configs
from dreamteam import data, protocol, registry, runs
from dreamteam.components import ngram_memory
from dreamteam.components import succession_objective as succession
from jaxmodel import model as gpt
from dreamteam.components.posterior_mean import decay_at
from jaxmodel import posterior_mean
from jaxmodel import recipe as recipes
from jaxmodel import succession_objective

VAL_WINDOWS_PER_BATCH = 8  # 8 x 64 x 50304 float32 logits = 100 MB per forward


class NonFiniteLossError(RuntimeError):
    """The protocol's validation loss became NaN or infinite."""


def make_train_step(cfg: configs.GPTConfig, optimizer: optax.GradientTransformation, dropout_key=None,
                    fast: bool = True, token_counts=None, ngram_stats=None, with_grads: bool = False,
                    donate: bool = True):
    """One jitted optimizer step (params, opt_state, x_BxT, y_BxT, it) -> (params, opt_state, loss).

    with_grads: (params, opt_state, loss, grads, stepped), stepped the parameters after the optimizer update
    and before the after-step updates, moe_mlp's bias (what parity compares piece by piece).
    donate: params and opt_state are donated, their buffers reused for the new ones (off where the caller
    keeps the old ones: parity reads the parameters entering each step). With cfg.dropout > 0 the
    dropout masks come from fold_in(dropout_key, it), so a run is reproducible from its seed. fast: the
    chunked tied-head loss of jaxmodel/fast.py (same numbers, no B x T x V logits); else the reference.
    The loss is the training objective (succession_objective's where it is on: token_counts of train.bin).
    The after_step components' updates (moe_mlp's balancing bias) follow the optimizer update, from what the step's
    forward sowed.
    """
    after_step = gpt.after_step_hooks(cfg)
    train_loss = succession_objective.make_training_loss(cfg, token_counts, fast, with_loads=True, ngram_stats=ngram_stats)

    def loss(params, x_BxT, y_BxT, it):
        if cfg.dropout == 0:
            return train_loss(params, x_BxT, y_BxT)
        rngs = {"dropout": jax.random.fold_in(dropout_key, it)}
        if cfg.filler("head_mixture") is not None:  # its training loss, the memory's held-out estimate
            return gpt.apply_with_loads(params, cfg, x_BxT, token_counts, ngram_stats, targets_BxT=y_BxT,
                                        deterministic=False, held_out=True, rngs=rngs, method=gpt.GPT.loss)
        logits_BxTxV, loads = gpt.apply_with_loads(params, cfg, x_BxT, token_counts, ngram_stats, deterministic=False,
                                                   rngs=rngs)
        if cfg.has("succession_objective"):
            return succession_objective.succession_cross_entropy(
                logits_BxTxV.reshape(-1, logits_BxTxV.shape[-1]), y_BxT.reshape(-1), succession.prior(token_counts),
                cfg.succession_objective_eps, cfg.succession_objective_zloss), loads
        return gpt.cross_entropy(logits_BxTxV, y_BxT), loads

    def step(params, opt_state, x_BxT, y_BxT, it):
        (loss_value, loads), grads = jax.value_and_grad(loss, has_aux=True)(params, x_BxT, y_BxT, it)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        stepped = optax.apply_updates(params, updates)
        params = stepped
        for hook in after_step:
            params = hook(params, loads)
        if with_grads:
            return params, opt_state, loss_value, grads, stepped
        return params, opt_state, loss_value

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def make_eval_loss(cfg: configs.GPTConfig, token_counts=None, ngram_stats=None):
    """Jitted mean cross-entropy of one batch, the protocol's single-batch validation loss."""
    return jax.jit(lambda params, x_BxT, y_BxT: gpt.loss_fn(params, cfg, x_BxT, y_BxT, token_counts,
                                                            ngram_stats=ngram_stats))


def make_val_loss(cfg: configs.GPTConfig, batch_size: int = VAL_WINDOWS_PER_BATCH, token_counts=None, ngram_stats=None):
    """val_loss(params, x_NxT, y_NxT): mean over every token of the N windows of -log p(y | x).

    The windows go through a jitted forward `batch_size` at a time; the last batch is padded with weight-0
    windows so that one compilation serves all. Per-batch sums are accumulated in float64 on the host.
    """

    @jax.jit
    def loss_sum(params, x_BxT, y_BxT, w_B):
        logits_BxTxV = gpt.GPT(cfg, token_counts, ngram_stats=ngram_stats).apply(params, x_BxT)
        ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, y_BxT)
        return jnp.sum(ce_BxT * w_B[:, None])

    def val_loss(params, x_NxT, y_NxT) -> float:
        n, t = x_NxT.shape
        pad = -n % batch_size
        # weight-0 padding windows keep every batch the same shape: one compilation
        x_MxT = np.concatenate([x_NxT, np.zeros((pad, t), x_NxT.dtype)]).astype(np.int32)
        y_MxT = np.concatenate([y_NxT, np.zeros((pad, t), y_NxT.dtype)]).astype(np.int32)
        w_M = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        total = 0.0
        for i in range(0, n + pad, batch_size):
            s = slice(i, i + batch_size)
            total += float(loss_sum(params, x_MxT[s], y_MxT[s], w_M[s]))
        return total / (n * t)

    return val_loss


def flat_params(params) -> dict[str, np.ndarray]:
    """The parameter tree as {'transformer/h_0/attn/c_attn/weight': array}, names joined by '/'."""
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params["params"], sep="/").items()}


def train(persona="baseline", seed=0, data_dir=None, max_iters=protocol.MAX_ITERS, out_dir="runs",
          progress=True, environ=None, fast=True) -> dict:
    """Train one persona under the frozen protocol with JAX; return (and write) the run record.

    persona is a registered name or a Persona; data_dir defaults to $DREAMTEAM_DATA in `environ`, else
    ./data/shakespeare. The record holds best_vloss, val_loss, val_loss_best, elapsed_min, ms_per_iter,
    fitness, compile_s and the curves; a safetensors file of the final parameters is written beside it.
    """
    t0 = time.time()
    batch_size, block_size = protocol.BATCH_SIZE, protocol.BLOCK_SIZE
    eval_interval = protocol.EVAL_INTERVAL
    max_iters = int(max_iters)
    if max_iters < 1:
        raise ValueError(f"max_iters={max_iters}; expected at least 1")

    spec = registry.get(persona) if isinstance(persona, str) else persona
    cfg = spec.model.replace(n_layer=protocol.N_LAYER, n_head=protocol.N_HEAD, n_embd=protocol.N_EMBD,
                             block_size=block_size)
    dataset = data.load(data_dir, environ)  # loaded once into memory
    train_sampler = data.BatchSampler(dataset.train, batch_size, block_size, seed=(seed, 0))
    val_sampler = data.BatchSampler(dataset.val, batch_size, block_size, seed=(seed, 1))
    val_x_NxT, val_y_NxT = data.val_windows(dataset.val, block_size)

    def get_batch(sampler):
        x_BxT, y_BxT = sampler()
        return x_BxT.astype(np.int32), y_BxT.astype(np.int32)  # int32 whether or not x64 is on

    counts = data.token_counts(dataset.train, cfg.vocab_size)
    bigrams = ngram_memory.stats_for(cfg, dataset.train)  # slot: head_mixture
    params = gpt.init_params(cfg, jax.random.PRNGKey(seed), token_counts=counts)
    dropout_key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)  # only used when cfg.dropout > 0
    optimizer = recipes.build_optimizer(spec.recipe, max_iters, cfg)
    opt_state = optimizer.init(params)
    train_step = make_train_step(cfg, optimizer, dropout_key, fast, counts, bigrams)
    # posterior_mean: every evaluation and the checkpoint use the averaged weights; the raw ones train
    avg = jax.tree.map(jnp.copy, params) if cfg.has("posterior_mean") else None  # a copy: params are donated
    update_avg = jax.jit(posterior_mean.update, donate_argnums=(0,))
    eval_loss = make_eval_loss(cfg, counts, bigrams)
    val_loss = make_val_loss(cfg, token_counts=counts, ngram_stats=bigrams)

    platform = jax.devices()[0].platform
    name = runs.run_name(spec.name, seed, f"{platform}-jax", max_iters)
    out_dir = Path(out_dir)
    record = {
        "name": name, "persona": spec.name, "seed": seed, "device": platform, "engine": "jax", "fast": fast,
        "max_iters": max_iters, "batch_size": batch_size, "block_size": block_size,
        "n_params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)),
        "config": spec.model, "recipe": spec.recipe, "data_dir": str(dataset.data_dir),
        "versions": runs.versions(jax=jax.__version__, flax=flax.__version__, optax=optax.__version__),
        "command": " ".join(sys.argv), "status": "running",
    }

    best_vloss = float("inf")
    vloss_curve, val_curve = [], []
    harness_s = 0.0  # time spent on the honest metrics, excluded from elapsed_min and ms_per_iter
    compile_s = None

    def checkpoint_eval(steps_done):
        nonlocal harness_s
        jax.block_until_ready(params)  # pending train steps belong to the loop's time, not the harness's
        t = time.time()
        val_curve.append((steps_done, val_loss(params if avg is None else avg, val_x_NxT, val_y_NxT)))
        harness_s += time.time() - t

    try:
        loop_start = time.time()
        for it in tqdm(range(max_iters), disable=not progress, mininterval=2.0, desc=spec.name):
            if it % eval_interval == 0:
                vloss = float(eval_loss(params if avg is None else avg, *get_batch(val_sampler)))
                if not math.isfinite(vloss):
                    raise NonFiniteLossError(f"validation loss is {vloss} at iteration {it}")
                best_vloss = min(best_vloss, vloss)
                vloss_curve.append((it, vloss))
                if progress or it % protocol.CHECKPOINT_INTERVAL == 0:  # long runs log without the bar too
                    tqdm.write(f"step {it}: val loss {vloss:.4f}, best {best_vloss:.4f}")

            t_step = time.time()
            params, opt_state, _ = train_step(params, opt_state, *get_batch(train_sampler), np.int32(it))
            if avg is not None:
                avg = update_avg(avg, params, np.float32(decay_at(it, cfg.posterior_mean_decay)))
            if compile_s is None:  # the first call traces and compiles
                jax.block_until_ready(params)
                compile_s = time.time() - t_step

            if (it + 1) % protocol.CHECKPOINT_INTERVAL == 0 and it + 1 < max_iters:
                checkpoint_eval(it + 1)
        jax.block_until_ready(params)  # dispatch is asynchronous: wait for the last step before timing
        loop_s = time.time() - loop_start - harness_s
        elapsed_min = (time.time() - t0 - harness_s) / 60
        checkpoint_eval(max_iters)
    except BaseException as e:
        runs.record_failure(out_dir / f"{name}.json", record, e, vloss_curve, val_curve)
        raise

    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(flat_params(params if avg is None else avg), str(out_dir / f"{name}.safetensors"))
    runs.honour_umask(out_dir / f"{name}.safetensors")  # safetensors writes 0o600
    path = runs.record_success(out_dir / f"{name}.json", record, best_vloss=best_vloss, vloss_curve=vloss_curve,
                               val_curve=val_curve, elapsed_min=elapsed_min, loop_s=loop_s, harness_s=harness_s,
                               compile_s=compile_s, checkpoint=f"{name}.safetensors")
    print(f"{runs.summary(record)}  compile_s {compile_s:.1f}  record {path}")  # with or without progress bars
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train one persona under the frozen DreamTeam protocol with JAX (CPU prototyping).")
    ap.add_argument("--persona", default="baseline", help=f"one of {sorted(registry.PERSONAS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help=f"default: ${data.DATA_ENV_VAR}, else ./data/shakespeare")
    ap.add_argument("--max-iters", type=int, default=protocol.MAX_ITERS,
                    help=f"default: the protocol's {protocol.MAX_ITERS}; fewer for smoke runs")
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--eager", action="store_true", help="the reference loss with the full logits instead of the chunked one")
    args = ap.parse_args(argv)
    if args.max_iters < 1:
        ap.error(f"--max-iters {args.max_iters}: expected at least 1")
    runs.raise_on_sigterm()
    try:
        record = train(args.persona, args.seed, args.data_dir, args.max_iters, args.out_dir,
                       progress=not args.no_progress, environ=dict(os.environ), fast=not args.eager)  # the command line may read it
    except (registry.UnknownPersonaError, data.DataError, configs.ConfigError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"best_vloss={record['best_vloss']:.4f} elapsed_min={record['elapsed_min']:.3f} "
          f"ms_per_iter={record['ms_per_iter']:.2f} compile_s={record['compile_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
