"""The training step on an accelerator, guarded on the CPU CI (issue 29).

Two checks of every persona's whole step as train_mps.py drives it (torchport.step.TrainStep: training_loss,
backward, recipe.optimizer_step with clipping, moe_mlp's router-bias update, posterior_mean's average):

- on the meta device (shapes and dtypes only, no data): the step runs at all without real values, so nothing in
  it reads a value back to the host (a `.item()` or `nonzero` raises on meta), and a TorchDispatchMode sees
  every aten op: from the second step on no op may copy a CPU tensor to the device (a host constant uploaded
  every step), touch a float64 tensor on the device (MPS has none), or synchronize;
- on the CPU with real numbers: the same mode over several steps, with the device path forced where a
  component has a CPU-only form (adaptive_softmax's selection of each tail's tokens, free on the CPU): no
  synchronizing op, no float64, no tensor made from host data from the second step on, and the same sequence of
  ops and shapes in every step after the first (fixed shapes, no data-dependent control flow: what a CUDA graph
  needs to replay the step).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dreamteam import registry
from dreamteam.components.ngram_memory import stats_for
from parity.checks import synthetic_stream, synthetic_token_counts
from torchport import recipe as recipes
from torchport.model import GPT
from torchport.step import TrainStep, posterior_mean_of
from torchport.succession_objective import training_loss

# every persona, and adaptive_softmax (no persona's since ada_lovelace swapped it), whose device form this file checks
PERSONAS = sorted(registry.PERSONAS) + ["baseline+adaptive_softmax"]
B, T = 2, 16  # tiny batches; every persona's own model otherwise (the 50304-way tied head included)
aten = torch.ops.aten
# ops that read device values back to the host, or whose output shape depends on them (a host sync on CUDA/MPS)
SYNC_OPS = {aten._local_scalar_dense, aten.item, aten.nonzero, aten.masked_select, aten.is_nonzero, aten.unique_dim,
            aten._unique2, aten.unique_consecutive, aten.equal, aten.repeat_interleave}
BOOL_INDEX_OPS = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}  # with a boolean index: a sync
COPY_OPS = {aten._to_copy, aten.copy_, aten.copy, aten._copy_from, aten._copy_from_and_resize, aten.to}


def _tensors(tree):
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class StepAudit(TorchDispatchMode):
    """Every aten op of the steps, per step; `problems` lists what the device path must not do from the second step
    on. device: the training device (a CPU tensor flowing into an op on it is an upload; on the CPU none is seen)."""

    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)
        self.step = 0
        self.ops: list[list[tuple]] = [[]]
        self.problems: list[str] = []

    def next_step(self):
        self.step += 1
        self.ops.append([])

    def on_device(self, t):
        return t.device.type == self.device.type

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins, outs = _tensors((args, kwargs)), _tensors(out)
        self.ops[self.step].append((str(func), tuple((tuple(t.shape), t.dtype) for t in outs)))
        if self.step >= 1:
            self.check(func, ins, outs)
        return out

    def check(self, func, ins, outs):
        packet = func.overloadpacket
        where = f"step {self.step}: {func}"
        if packet in SYNC_OPS and any(self.on_device(t) for t in ins):
            self.problems.append(f"{where} synchronizes (reads device values on the host)")
        if packet in BOOL_INDEX_OPS and any(t.dtype == torch.bool and t is not ins[0] for t in ins):
            self.problems.append(f"{where} indexes with a boolean mask (a sync: its shape depends on the values)")
        if packet is aten.lift_fresh and any(self.on_device(t) for t in outs):  # torch.tensor(data) on the device
            self.problems.append(f"{where} makes a tensor from host data (a constant rebuilt every step)")
        if self.device.type != "cpu":
            host = [t for t in ins if t.device.type == "cpu" and (packet in COPY_OPS or t.dim() > 0)]
            if host and any(self.on_device(t) for t in outs):
                self.problems.append(f"{where} copies a host tensor {tuple(host[0].shape)} to the device")
        if any(t.dtype == torch.float64 and self.on_device(t) for t in ins + outs):
            self.problems.append(f"{where} computes in float64 on the device")


def build(name: str, device: str, fused: bool | None = None):
    """(model, optimizer, recipe, averaged) of the persona as train_mps.py builds them, moved to `device`."""
    persona = registry.from_label(name)
    cfg = persona.model.replace(block_size=T)
    torch.manual_seed(0)
    model = GPT(cfg, token_counts=synthetic_token_counts(cfg), ngram_stats=stats_for(cfg, synthetic_stream(cfg))).to(device)
    optimizer = recipes.build_optimizer(model, persona.recipe, device_type=torch.device(device).type, fused=fused)
    averaged = posterior_mean_of(model)
    model.train()
    return model, optimizer, persona.recipe, averaged


def batches(n: int, vocab: int, device: str, seed: int = 0):
    """n (x, y) batches of uniform random ids: every cluster of adaptive_softmax gets targets."""
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(0, vocab, (2, B, T), generator=g).to(device)) for _ in range(n)]


def audited_steps(name: str, device: str, n: int = 3, fused: bool | None = None, fast: bool = True, fixed_shapes=True):
    model, optimizer, recipe, averaged = build(name, device, fused)
    train_step = TrainStep(model, optimizer, recipe, fast=fast, averaged=averaged)
    if hasattr(model.transformer, "adaptive_softmax"):
        model.transformer.adaptive_softmax.fixed_shapes = fixed_shapes
    data = batches(n, model.config.vocab_size, device)  # the batches are not part of the step
    audit = StepAudit(device)
    with audit:
        for it, (x, y) in enumerate(data):
            loss = train_step(x, y, it)
            audit.next_step()
    return audit, model, loss


def test_the_personas_exercise_every_after_step_update():
    # the step below covers the hooks train_mps.py runs: some persona has moe_mlp, posterior_mean, muon
    components = {c for name in PERSONAS for c in registry.from_label(name).model.components}
    assert {"moe_mlp", "posterior_mean", "muon", "adaptive_softmax", "rope", "difference_ssm", "ngram_memory"} <= components


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "eager"])
@pytest.mark.parametrize("name", PERSONAS)
def test_whole_step_on_the_meta_device(name, fast):
    # torch refuses fused AdamW on meta: the multi-tensor form runs (its step counts live on the host)
    audit, model, loss = audited_steps(name, "meta", n=3, fast=fast)
    assert loss.device.type == "meta" and loss.shape == ()
    assert all(p.device.type == "meta" for p in model.parameters())
    assert not audit.problems, "\n".join(audit.problems[:10])
    assert len(audit.ops[1]) > 100 and audit.ops[1] == audit.ops[2]  # the same ops and shapes every step


@pytest.mark.parametrize("name", PERSONAS)
def test_cpu_steps_have_no_sync_no_float64_and_fixed_shapes(name):
    audit, model, loss = audited_steps(name, "cpu", n=4)
    assert torch.isfinite(loss)
    assert not audit.problems, "\n".join(audit.problems[:10])
    # a different batch every step, the same ops with the same shapes
    assert len(audit.ops[1]) > 100 and audit.ops[1] == audit.ops[2] == audit.ops[3]


def test_the_audit_catches_a_sync_a_float64_constant_and_an_upload():
    # adaptive_softmax's CPU form selects each tail's tokens (nonzero): flagged, and its op sequence follows the data
    audit, _, _ = audited_steps("baseline+adaptive_softmax", "cpu", n=3, fixed_shapes=False)
    assert any("nonzero" in p for p in audit.problems)
    # rope's constants rebuilt from float64 numpy every step (as before issue 29): float64 on the CPU, an upload on meta
    for device in ("cpu", "meta"):
        x = torch.zeros(1, 1, T, 8, device=device)
        audit = StepAudit(device)
        with audit:
            for _ in range(2):
                inv = torch.from_numpy(10000.0 ** (-np.arange(0, 8, 2, dtype=np.float64) / 8)).to(device=device, dtype=x.dtype)
                (x * inv.repeat(2)).sum()
                audit.next_step()
        if device == "cpu":
            assert any("float64" in p for p in audit.problems) and any("host data" in p for p in audit.problems)
        else:
            assert any("copies a host tensor" in p for p in audit.problems)
    # a value read back on the host
    audit = StepAudit("cpu")
    with audit:
        audit.next_step()
        torch.ones(3).sum().item()
        torch.ones(3)[torch.ones(3) > 0]
    assert any("_local_scalar_dense" in p for p in audit.problems)
    assert any("boolean mask" in p for p in audit.problems)


def test_fixed_shape_adaptive_softmax_equals_the_selection():
    # the device form (every tail for every token, masked) and the CPU form (each tail's tokens selected): the same
    # loss and gradients, float64
    persona = registry.build("ada_lovelace", add=("adaptive_softmax",), remove=("byte_ngram_embedding",))
    cfg = persona.model.replace(block_size=T, adaptive_softmax_tied_tails=True)
    torch.manual_seed(0)
    model = GPT(cfg, token_counts=synthetic_token_counts(cfg)).double()
    (x, y), = batches(1, cfg.vocab_size, "cpu", seed=3)
    y[0, :3] = -1  # ignored targets
    out = {}
    for fixed in (True, False):
        model.transformer.adaptive_softmax.fixed_shapes = fixed
        model.zero_grad()
        loss = training_loss(model, x, y)
        loss.backward()
        out[fixed] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-12, atol=0)
    # a tail without any target in the batch: no gradient on the CPU (not computed), zeros on the device (as eager)
    fixed, selected = out[True][1], out[False][1]
    assert set(selected) <= set(fixed)
    for n in fixed:
        torch.testing.assert_close(fixed[n], selected.get(n, torch.zeros_like(fixed[n])), rtol=1e-9, atol=1e-14, msg=n)
    eager = model(x, y)[1]
    torch.testing.assert_close(out[True][0], eager.detach(), rtol=1e-12, atol=0)
