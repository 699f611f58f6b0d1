"""Checks every new component's tests make the same way: its initial weights against the baseline's, float64 parity
of a persona with it, and a short training run through the protocol's loop that lowers the validation loss."""

import json

import numpy as np
import torch

import train_mps
from parity import checks
from torchport.model import GPT

PARITY_CHECKS = {"logits", "loss", "gradients", "optimizer_step", "trajectory_20_loss", "trajectory_20_params"}


def torch_models_at_seed(*configs, seed: int = 0):
    """One float64 torch GPT per config, each drawn from the same seed (a component's initial weights against
    the baseline's)."""
    models = []
    for cfg in configs:
        torch.manual_seed(seed)
        models.append(GPT(cfg).double())
    return models


def assert_float64_parity(persona, bound: float = 1e-9):
    """Every parity check of `persona` (batch 2, 20 steps, float64) passes, each error at most `bound`."""
    results = checks.run_checks(persona, "float64", batch_size=2, steps=20)
    assert {r.check for r in results} >= PARITY_CHECKS
    failed = [(r.check, r.max_error) for r in results if not r.passed]
    assert not failed, failed
    assert max(r.max_error for r in results) <= bound


def assert_twenty_steps_lower_the_loss(persona, data_dir, out_dir):
    """train() runs 20 iterations of `persona` and writes a record: status ok, its components, a first evaluation
    of a fresh model (about ln V) and a final validation loss at least 0.1 below it."""
    train_mps.train(persona, data_dir=data_dir, device_override="cpu", max_iters_override=20, out_dir=out_dir,
                    progress=False)
    (path,) = out_dir.glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["config"]["components"] == list(persona.model.components)
    (_, initial), = record["vloss_curve"]  # the evaluation before the first step
    assert abs(initial - np.log(50304)) < 0.1  # a fresh model: about ln V
    assert np.isfinite(record["val_loss"]) and record["val_loss"] < initial - 0.1
