"""Equivalence checks between the Flax reference and the torch port, for one persona.

With the same weights (Flax init, converted by name): forward logits, loss, every gradient, one step of the
persona's optimizer, and a training trajectory on fixed batches, with the reference loss and again with each
side's fused chunked loss (torchport/fast.py, jaxmodel/fast.py: the training runs' default). Bounds
(docs/protocol.md, "Parity"): in float64 the largest absolute difference is at most 1e-9; in float32 the
norm-wise relative error of each array, ||a - b||_2 / ||b||_2, is at most 1e-5 (the largest over arrays is
reported).

Why norm-wise in float32: Adam divides each element's momentum by its own sqrt(v) + eps, so an embedding row
of a token absent from the batches, whose gradient (~1e-8) comes only through the tied head's softmax,
moves by an amount set by float32 rounding of that tiny gradient; element by element such rows differ by a
few 1e-5 of the array's largest entry after 20 steps while the array as a whole agrees to ~1e-7. Exactness is
what the float64 check (absolute, 1e-9) proves; float32 catches a path that lost precision (bf16, TF32).

fixed_point_qat rounds weights in the forward pass, a discontinuous function: where a float32 weight sits
within rounding of a code boundary, the two frameworks' weights (1e-7 apart) can take different int8 codes,
and Adam's per-element normalization then carries that one-step difference on. For a persona with the
component the trajectory is therefore code-aligned (`CodeAlignment`): before each step, every block matrix's
codes are computed on both sides; each code that differs must be a straddle of a rounding-level difference,
|W_t / s_t - W_j / s_j| / Q within the dtype's bound (check `trajectory_N_code_flips`; the count is in its
note), and the rows holding one take the reference's values, so that the trajectory bound then measures
everything but the discontinuity. Where no code differs (always, so far, in float64) the alignment does nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch

from dreamteam import registry
from dreamteam.components import ngram_memory
from dreamteam.config import Persona
from dreamteam.components.posterior_mean import decay_at
from jaxmodel import fixed_point_qat as jqat
from jaxmodel import model as jm
from jaxmodel import posterior_mean as jpm
from jaxmodel import recipe as jr
from jaxmodel.train import make_train_step
from parity.convert import flax_key_to_torch, flax_to_torch, torch_to_flax, _flatten
from torchport import fixed_point_qat as tqat
from torchport import model as tm
from torchport import recipe as tr
from torchport.step import TrainStep, posterior_mean_of

BOUNDS = {"float64": 1e-9, "float32": 1e-5}


def float64():
    """JAX's float64 switched on for a `with` block (float32 arrays stay float32). The checks run inside one, so
    that importing parity changes nothing for the rest of the process. A new context each time: one instance
    entered twice, nested, does not restore the setting."""
    return jax.enable_x64(True)


DTYPES = {"float64": (jnp.float64, torch.float64), "float32": (jnp.float32, torch.float32)}


@dataclass
class CheckResult:
    persona: str
    check: str
    dtype: str
    max_error: float
    bound: float
    metric: str  # "abs", "rel", or "of Q" (code_flips: a fraction of the fixed-point range)
    note: str = ""

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_error) and self.max_error <= self.bound)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


def array_error(a, b, dtype: str) -> float:
    """float64: max |a - b|; float32: ||a - b||_2 / ||b||_2 (b the Flax reference)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if dtype == "float64":
        return float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / scale if scale > 0 else diff


def tree_error(tree_a, tree_b, dtype: str) -> float:
    """The largest array_error over matching leaves of two {'params': ...} trees."""
    flat_b = dict(_flatten(tree_b))
    errs = [array_error(a, flat_b[path], dtype) for path, a in _flatten(tree_a)]
    if len(errs) != len(flat_b):
        raise ValueError("trees have different leaves")
    return max(errs)


@dataclass
class Pair:
    """The two models of one persona holding the same weights."""

    persona: Persona
    dtype: str
    params: dict  # Flax variables
    torch_model: tm.GPT
    token_counts: np.ndarray = None
    ngram_stats: object = None  # the bigram counts of the synthetic stream, for ngram_memory

    @classmethod
    def make(cls, persona: Persona, dtype: str, seed: int = 0) -> "Pair":
        if persona.model.dropout:
            raise ValueError("parity runs with dropout 0: the masks are random draws the two sides do not share")
        if dtype == "float64" and not jax.config.jax_enable_x64:
            raise RuntimeError("a float64 Pair needs JAX's float64: make and use it inside `with parity.checks.float64():`")
        jdtype = DTYPES[dtype][0]
        counts = synthetic_token_counts(persona.model)
        bigrams = ngram_memory.stats_for(persona.model, synthetic_stream(persona.model))  # slot: head_mixture
        params = jm.init_params(persona.model, jax.random.PRNGKey(seed), jdtype, token_counts=counts)
        torch.manual_seed(seed)
        return cls(persona, dtype, params, cls.torch_model_of(persona, dtype, params, counts, bigrams), counts, bigrams)

    @staticmethod
    def torch_model_of(persona: Persona, dtype: str, params, counts, ngram_stats=None) -> tm.GPT:
        model = tm.GPT(persona.model, token_counts=counts, ngram_stats=ngram_stats).to(DTYPES[dtype][1])
        model.load_state_dict(flax_to_torch(params, template=model.state_dict()))
        return model

    def fresh(self) -> "Pair":
        """The pair as made: Flax's initial variables (immutable, so still this pair's) in a new torch model."""
        return Pair(self.persona, self.dtype, self.params,
                    self.torch_model_of(self.persona, self.dtype, self.params, self.token_counts, self.ngram_stats),
                    self.token_counts, self.ngram_stats)

    def torch_params(self) -> dict:
        return torch_to_flax(self.torch_model.state_dict(), template=self.params)

    def torch_grads(self) -> dict:
        grads = {n: p.grad for n, p in self.torch_model.named_parameters()}
        # buffers (moe_mlp's balancing bias) take no gradient: 0, as jax.grad gives for them
        grads.update({n: torch.zeros_like(b) for n, b in self.torch_model.named_buffers() if n in self.torch_model.state_dict()})
        return torch_to_flax(grads, template=self.params)


def synthetic_stream(cfg, seed: int = 4321) -> np.ndarray:
    """A stream of 20000 Zipf-distributed ids: many ids unseen and some seen once or twice, the shape of train.bin's
    statistics, for the frequency-built components; the same for both frameworks."""
    rng = np.random.default_rng(seed)
    return np.minimum(rng.zipf(1.3, size=20000) - 1, cfg.vocab_size - 1)


def synthetic_token_counts(cfg, seed: int = 4321) -> np.ndarray:
    """The token counts of synthetic_stream."""
    return np.bincount(synthetic_stream(cfg, seed), minlength=cfg.vocab_size).astype(np.int64)


def fixed_batches(cfg, n: int, batch_size: int, seed: int = 1234):
    """n fixed (x, y) batches of random token ids, the same for both frameworks."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, min(cfg.vocab_size, 50257), size=(n, batch_size, cfg.block_size + 1))
    return [(np.ascontiguousarray(b[:, :-1]), np.ascontiguousarray(b[:, 1:])) for b in ids]


class CodeAlignment:
    """fixed_point_qat's codes kept equal along the two trajectories (see the module docstring).

    record(it, params): the Flax weights entering step `it`, and their codes by the Flax quantizer.
    align(it, model): before torch's step `it`, its codes by the torch quantizer; at each code that differs,
    the straddle |W_t / s_t - W_j / s_j| / Q (the two weights' distance on the fixed-point scale, as a
    fraction of its full range Q) is recorded, and the row holding it is set to the Flax row (equal rows give
    equal scales, hence equal codes). `worst` is the largest straddle, `flips` the count, `rows` the rows set,
    `size` the number of codes compared at each step.
    """

    def __init__(self, model: tm.GPT, bits: int):
        self.keys = tqat.quantized_keys(model)
        self.size = sum(p.numel() for n, p in model.named_parameters() if n in self.keys)  # codes per step
        self.bits = bits
        self.reference: dict[int, dict] = {}
        self.worst, self.flips, self.rows = 0.0, 0, 0

    def record(self, it: int, params) -> None:
        flat = {flax_key_to_torch(path): leaf for path, leaf in _flatten(params["params"])}
        self.reference[it] = {}
        for key in self.keys:
            codes, scale = jqat.quantize(flat[key], self.bits)
            self.reference[it][key] = (np.asarray(flat[key]), np.asarray(codes), np.asarray(scale))

    def align(self, it: int, model: tm.GPT) -> None:
        params = dict(model.named_parameters())
        q = tqat.qmax(self.bits)
        for key in self.keys:
            w_j, codes_j, scale_j = self.reference[it][key]
            w = params[key]
            codes_t, scale_t = tqat.quantize(w.detach(), self.bits)
            differ = codes_t.numpy() != codes_j
            if not differ.any():
                continue
            position_t = tqat.scaled(w.detach(), scale_t).numpy()
            straddle = np.abs(position_t - np.asarray(jqat.scaled(w_j, scale_j)))[differ] / q
            self.worst = max(self.worst, float(straddle.max()))
            self.flips += int(differ.sum())
            rows = np.flatnonzero(differ.any(-1))
            self.rows += len(rows)
            with torch.no_grad():
                w[torch.from_numpy(rows)] = torch.from_numpy(w_j[rows]).to(w.dtype)
        del self.reference[it]


def run_checks(persona: Persona, dtype: str, batch_size: int = 4, steps: int = 20, seed: int = 0,
               fast_trajectory: bool = False) -> list[CheckResult]:
    """Every check of the persona in the dtype. fast_trajectory: also the trajectory with the fused losses
    (`python -m parity` runs it; the components' own tests leave it out to stay quick)."""
    with float64():
        return _run_checks(persona, dtype, batch_size, steps, seed, fast_trajectory)


def _run_checks(persona: Persona, dtype: str, batch_size: int, steps: int, seed: int,
                fast_trajectory: bool) -> list[CheckResult]:
    bound = BOUNDS[dtype]
    metric = "abs" if dtype == "float64" else "rel"
    cfg = persona.model
    results: list[CheckResult] = []

    def record(check, err, note="", metric=metric):
        results.append(CheckResult(persona.name, check, dtype, float(err), bound, metric, note))

    batches = fixed_batches(cfg, steps, batch_size)
    x, y = batches[0]
    pair = Pair.make(persona, dtype, seed)
    counts = pair.token_counts

    # forward logits (the Flax side jitted: one compilation instead of one per primitive, most of the time of
    # an eager check at these shapes; jit changes no result beyond rounding, far inside both bounds)
    logits_j = jax.jit(jm.GPT(cfg, counts, ngram_stats=pair.ngram_stats).apply)(pair.params, jnp.asarray(x))
    # in evaluation mode, as the Flax apply (deterministic; ngram_memory's full estimate, not the training one)
    pair.torch_model.eval()
    with torch.no_grad():
        logits_t = pair.torch_model(torch.from_numpy(x), torch.from_numpy(y))[0]
    pair.torch_model.train()
    record("logits", array_error(logits_t.numpy(), logits_j, dtype))

    # a training trajectory on fixed batches from the same start; its first step is also checked piece by
    # piece: the training loss (cross-entropy, or succession_objective's), every gradient, one optimizer step
    # (before moe_mlp's balancing-bias update, which the trajectory then covers)
    alignment = CodeAlignment(pair.torch_model, cfg.fixed_point_qat_bits) if cfg.has("fixed_point_qat") else None
    losses_j, params_j, avg_j, first_j = jax_trajectory(pair.params, persona, batches, counts,
                                                        on_input=alignment.record if alignment else None,
                                                        ngram_stats=pair.ngram_stats)

    def after_backward(it, model, loss):
        if it == 0:
            record("loss", array_error(loss.item(), first_j["loss"], dtype))
            record("gradients", tree_error(pair.torch_grads(), first_j["grads"], dtype))

    def after_update(it, model):
        if it == 0:
            record("optimizer_step", tree_error(pair.torch_params(), first_j["stepped"], dtype))

    def record_code_flips(alignment, suffix=""):
        record(f"trajectory_{steps}_code_flips{suffix}", alignment.worst,
               f"{alignment.flips} of {steps} x {alignment.size} codes differed; {alignment.rows} rows aligned",
               metric="of Q")

    losses_t, avg_t = torch_trajectory(pair.torch_model, persona, batches, after_backward, after_update,
                                       before_forward=alignment.align if alignment else None)
    if alignment is not None:
        record_code_flips(alignment)
    record(f"trajectory_{steps}_loss", array_error(losses_t, losses_j, dtype))
    record(f"trajectory_{steps}_params", tree_error(pair.torch_params(), params_j, dtype))
    if avg_j is not None:  # posterior_mean: the averaged weights along the same trajectory
        record(f"trajectory_{steps}_posterior_mean", tree_error(torch_to_flax(avg_t.state_dict(), template=params_j), avg_j, dtype))
    if not fast_trajectory:
        return results

    # the same trajectory from the same start with each side's fused chunked loss (torchport/fast.py,
    # jaxmodel/fast.py), the one train_mps.py and jaxmodel.train train with unless --eager
    fast = pair.fresh()
    alignment = CodeAlignment(fast.torch_model, cfg.fixed_point_qat_bits) if cfg.has("fixed_point_qat") else None
    losses_j, params_j, _, _ = jax_trajectory(fast.params, persona, batches, counts, fast=True,
                                              on_input=alignment.record if alignment else None,
                                              ngram_stats=fast.ngram_stats)
    losses_t, _ = torch_trajectory(fast.torch_model, persona, batches, fast=True,
                                   before_forward=alignment.align if alignment else None)
    if alignment is not None:
        record_code_flips(alignment, "_fast")
    record(f"trajectory_{steps}_loss_fast", array_error(losses_t, losses_j, dtype))
    record(f"trajectory_{steps}_params_fast", tree_error(fast.torch_params(), params_j, dtype))
    return results


def jax_trajectory(params, persona: Persona, batches, token_counts=None, on_input=None, ngram_stats=None,
                   fast: bool = False):
    """(losses, final params, posterior_mean average or None, first step's {'loss', 'grads', 'stepped'}) of
    len(batches) training steps of jaxmodel.train.make_train_step (fast: with the fused chunked loss);
    'stepped' is the parameters after the optimizer, before the router bias. on_input(it, params) sees the
    parameters entering step `it`."""
    cfg = persona.model
    opt = jr.build_optimizer(persona.recipe, len(batches), cfg)
    state = jax.jit(opt.init)(params)
    # not donated: on_input's arrays, and the caller's initial params, stay valid
    step = make_train_step(cfg, opt, fast=fast, token_counts=token_counts, ngram_stats=ngram_stats,
                           with_grads=True, donate=False)
    avg = params if cfg.has("posterior_mean") else None
    losses, first = [], None
    for it, (x, y) in enumerate(batches):
        if on_input is not None:
            on_input(it, params)
        params, state, loss, grads, stepped = step(params, state, jnp.asarray(x), jnp.asarray(y), np.int32(it))
        if it == 0:
            first = {"loss": loss, "grads": grads, "stepped": stepped}
        if avg is not None:
            avg = jpm.update(avg, params, decay_at(it, cfg.posterior_mean_decay))
        losses.append(float(loss))
    return np.array(losses), params, avg, first


def torch_trajectory(model, persona: Persona, batches, after_backward=None, after_update=None, before_forward=None,
                     fast: bool = False):
    """(losses, the PosteriorMean's averaged module or None); the model's weights are trained in place by
    torchport.step.TrainStep (fast: with the fused chunked loss). before_forward(it, model) may set weights
    before step `it` (CodeAlignment); after_backward(it, model, loss) sees the gradients, after_update(it, model)
    the weights the optimizer wrote."""
    opt = tr.build_optimizer(model, persona.recipe)
    step = TrainStep(model, opt, persona.recipe, fast=fast, averaged=posterior_mean_of(model),
                     after_backward=after_backward, after_update=after_update)
    losses = []
    for it, (x, y) in enumerate(batches):
        if before_forward is not None:
            before_forward(it, model)
        losses.append(step(torch.from_numpy(x), torch.from_numpy(y), it).item())
    return np.array(losses), (step.averaged.module if step.averaged is not None else None)


def run(personas: list, dtypes: list[str], **kwargs) -> list[CheckResult]:
    """Every check for each persona (a registry name or a Persona) in each dtype."""
    results = []
    for persona in personas:
        persona = registry.get(persona) if isinstance(persona, str) else persona
        for dtype in dtypes:
            results += run_checks(persona, dtype, **kwargs)
    return results
