"""muon: the Newton-Schulz orthogonalization and the Muon step, from their mathematics, in both frameworks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import ConfigError, Recipe
from dreamteam.components.ngram_memory import stats_for
from jaxmodel import model as jm
from jaxmodel import muon as jmuon
from jaxmodel import recipe as jr
from parity.checks import synthetic_stream
from torchport import muon as tmuon
from torchport import recipe as tr
from torchport.model import GPT

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


def model_of(persona) -> GPT:
    """The persona's torch model (ngram_memory's counts from parity's synthetic Zipf stream)."""
    return GPT(persona.model, token_counts=np.ones(persona.model.vocab_size, np.int64),
               ngram_stats=stats_for(persona.model, synthetic_stream(persona.model)))


def ns_jax(G, steps=5, bf16=False):
    return np.asarray(jmuon.newton_schulz(jnp.asarray(G), steps, bf16), dtype=np.float64)


def ns_torch(G, steps=5, bf16=False):
    return tmuon.newton_schulz(torch.from_numpy(G), steps, bf16).double().numpy()


NS = [pytest.param(ns_jax, id="jax"), pytest.param(ns_torch, id="torch")]


@pytest.mark.parametrize("ns", NS)
@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 96), (128, 32)])
def test_newton_schulz_singular_values_of_random_full_rank_input(ns, shape):
    # Gaussian matrices of aspect ratio >= 3: full rank with condition number <= ~4, so that five steps reach
    # every singular value (a much smaller one would need more steps: it grows by a = 3.44 per step)
    G = np.random.default_rng(sum(shape)).normal(size=shape) * 7.0
    s = np.linalg.svd(ns(G), compute_uv=False)
    assert s.min() >= 0.6 and s.max() <= 1.2, (s.min(), s.max())
    s_in = np.linalg.svd(G, compute_uv=False)
    assert s_in.max() / s_in.min() > 1.5  # the input was not orthogonal already: the iteration did the work


@pytest.mark.parametrize("ns", NS)
@pytest.mark.parametrize("shape", [(24, 24), (8, 40), (40, 8)])
def test_newton_schulz_of_orthogonal_input_is_a_scalar_multiple(ns, shape):
    # Q with orthonormal rows (or columns): all singular values equal, so the output is c * Q, one scalar c
    Q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(max(shape), min(shape))))
    Q = Q if shape[0] >= shape[1] else Q.T
    out = ns(Q * 5.0)  # the scale of the input does not matter: the iteration starts from X / ||X||_F
    c = float(np.sum(out * Q) / np.sum(Q * Q))
    assert 0.6 <= c <= 1.2
    np.testing.assert_allclose(out, c * Q, rtol=0, atol=1e-10)


def test_newton_schulz_acts_on_singular_values_only_and_frameworks_agree():
    # G = U diag(s) V^T -> U diag(f(s)) V^T: same singular vectors; f the quintic applied five times
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.normal(size=(20, 12)))
    V, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    s = np.linspace(0.3, 2.0, 12)
    out_j, out_t = ns_jax(U @ np.diag(s) @ V.T), ns_torch(U @ np.diag(s) @ V.T)
    x = s / (np.sqrt(np.sum(s**2)) + jmuon.NS_EPS)
    a, b, c = jmuon.NS_COEFFS
    for _ in range(5):
        x = a * x + b * x**3 + c * x**5
    np.testing.assert_allclose(out_j, U @ np.diag(x) @ V.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_t, out_j, rtol=0, atol=1e-13)


@pytest.mark.parametrize("ns", NS)
def test_bf16_fast_path_close_to_float32(ns):
    G = np.random.default_rng(7).normal(size=(32, 96)).astype(np.float32)
    ref = ns(G)
    fast = ns(G, bf16=True)
    assert fast.dtype == np.float64 and not np.array_equal(fast, ref)  # it did run in another precision
    # bfloat16 keeps 8 bits of mantissa: the iterate drifts by a few per cent, the singular values stay in range
    assert np.linalg.norm(fast - ref) / np.linalg.norm(ref) < 0.1
    s = np.linalg.svd(fast, compute_uv=False)
    assert s.min() >= 0.5 and s.max() <= 1.3, (s.min(), s.max())


def test_muon_update_has_condition_number_near_one():
    # the whole step of the torch optimizer on a tall matrix: (W_before - W_after) / lr has singular values
    # sqrt(rows / cols) * [0.6, 1.2], whatever the gradient's spread
    W = torch.nn.Parameter(torch.zeros(48, 16, dtype=torch.float64))
    opt = tmuon.Muon([dict(params=[W], use_muon=True, lr=0.1, momentum=0.0, nesterov=False)])
    g = torch.randn(48, 16, dtype=torch.float64) @ torch.diag(torch.logspace(0, 0.5, 16, dtype=torch.float64))
    W.grad = g
    opt.step()
    s = torch.linalg.svdvals(-W.detach() / 0.1).numpy() / np.sqrt(3.0)
    assert s.min() >= 0.6 and s.max() <= 1.2
    assert torch.linalg.cond(g).item() > 2.5  # the gradient itself is not that well conditioned


def ns_one_matrix(G, steps=5):
    """The per-matrix Newton-Schulz as torchport/muon.py ran it before batching (2-D matmuls)."""
    a, b, c = tmuon.NS_COEFFS
    X = G.T if G.size(0) > G.size(1) else G
    X = X / (torch.linalg.norm(X) + tmuon.NS_EPS)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if G.size(0) > G.size(1) else X


SMALL = [(12, 8), (12, 8), (8, 12), (24, 8), (12, 8), (6, 10)]
MODEL = [(96, 32), (96, 32), (32, 32), (32, 32), (128, 32), (32, 128), (128, 32), (32, 128)]  # alan_turing's


@pytest.mark.parametrize("dtype, rtol, shapes", [(torch.float64, 1e-12, SMALL), (torch.float64, 1e-12, MODEL),
                                                 (torch.float32, 1e-6, MODEL)])
@pytest.mark.parametrize("split", [1, 3])
def test_batched_newton_schulz_equals_one_matrix_at_a_time(dtype, rtol, shapes, split):
    # orthogonalize_all stacks the row blocks of one shape: the same update as each matrix alone (float32 at the
    # model's shapes: tiny ones such as 4 x 8 go through other CPU kernels when batched, ~1e-6 apart)
    g = torch.Generator().manual_seed(5)
    us = [torch.randn(s, generator=g, dtype=dtype) * (i + 1) for i, s in enumerate(shapes)]
    got = tmuon.orthogonalize_all(us, 5, False, split)
    want = [torch.cat([ns_one_matrix(b) * tmuon.shape_scale(b.shape) for b in u.chunk(split, 0)]) for u in us]
    for u, o, w in zip(us, got, want):
        assert o.shape == u.shape and o.dtype == dtype
        assert (o - w).norm().item() <= rtol * w.norm().item()
        # one matrix through orthogonalize: the batched result (float64 exactly; float32 within the bound above,
        # since batched and single products may take different CPU kernels, as on AMD EPYC)
        one = tmuon.orthogonalize(u, 5, False, split)
        assert (one - o).norm().item() <= (0 if dtype == torch.float64 else rtol * w.norm().item())


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_part_is_torch_adamw(fused):
    # the groups without use_muon take torch.optim.AdamW's update (its fused kernel or its foreach form)
    g = torch.Generator().manual_seed(2)
    W0 = [torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    grads = [[torch.randn(w.shape, generator=g, dtype=torch.float64) for w in W0] for _ in range(5)]
    ps = [torch.nn.Parameter(w.clone()) for w in W0]
    qs = [torch.nn.Parameter(w.clone()) for w in W0]
    mine = tmuon.Muon([dict(params=ps, lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)], fused=fused)
    ref = torch.optim.AdamW(qs, lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=fused,
                            foreach=None if fused else True)
    assert tr.is_fused(mine) == fused
    for gs in grads:
        for p, q, gr in zip(ps, qs, gs):
            p.grad, q.grad = gr.clone(), gr.clone()
        mine.step()
        ref.step()
    for p, q, w in zip(ps, qs, W0):
        assert torch.equal(p.detach(), q.detach())
        assert (p.detach() - w).abs().max().item() > 0.01  # it moved


def test_fused_adamw_wherever_torch_has_it():
    # MPS gets the fused kernel where the installed torch lists it (torch 2.13 does); the meta device does not
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    assert tr.fused_supported("cpu") and tr.fused_supported("cuda") and not tr.fused_supported("meta")
    assert tr.fused_supported("mps") == ("mps" in _get_fused_kernels_supported_devices())
    for name in ("baseline", "alan_turing"):  # plain AdamW and Muon's AdamW part
        persona = registry.get(name)
        model = model_of(persona)
        for device_type in ("cpu", "mps", "cuda"):  # the choice only: the parameters stay on the CPU
            assert tr.is_fused(tr.build_optimizer(model, persona.recipe, device_type)) == tr.fused_supported(device_type)
        assert not tr.is_fused(tr.build_optimizer(model, persona.recipe, "cpu", fused=False))


def test_optimizer_parity_20_steps_float64():
    # Muon (Nesterov, decoupled weight decay) on random gradients: the optax transform and the torch optimizer
    rng = np.random.default_rng(11)
    W0 = {"a": rng.normal(size=(12, 8)), "b": rng.normal(size=(6, 10)), "qkv": rng.normal(size=(24, 8))}
    grads = [{k: rng.normal(size=v.shape) for k, v in W0.items()} for _ in range(20)]
    lr, wd = 0.05, 0.1
    opts = {k: jr.optax.chain(jmuon.scale_by_muon(0.9, True, 5, split=3 if k == "qkv" else 1),
                              jr.optax.add_decayed_weights(wd), jr.optax.scale_by_learning_rate(lr)) for k in W0}
    params_j = {k: jnp.asarray(v) for k, v in W0.items()}
    states = {k: opts[k].init(params_j[k]) for k in W0}
    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in W0.items()}
    opt_t = tmuon.Muon([dict(params=[tparams[k]], use_muon=True, lr=lr, momentum=0.9, weight_decay=wd,
                             split=3 if k == "qkv" else 1) for k in W0])
    for g in grads:
        for k in W0:
            u, states[k] = opts[k].update(jnp.asarray(g[k]), states[k], params_j[k])
            params_j[k] = params_j[k] + u
            tparams[k].grad = torch.from_numpy(g[k].copy())
        opt_t.step()
    for k in W0:
        np.testing.assert_allclose(tparams[k].detach().numpy(), np.asarray(params_j[k]), rtol=0, atol=1e-9)
        assert np.abs(np.asarray(params_j[k]) - W0[k]).max() > 0.1  # it moved


def test_muon_takes_the_block_matrices_only_on_both_sides():
    persona = registry.get("alan_turing")
    model = model_of(persona)
    opt = tr.build_optimizer(model, persona.recipe)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_t = {names[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    assert muon_t and all(n.startswith("transformer.h.") and n.endswith(".weight") for n in muon_t)
    assert not any("tape" in n or "ln_" in n or "wte" in n or "lm_head" in n for n in muon_t)
    qkv = {names[id(p)] for g in opt.param_groups if g.get("split") == 3 for p in g["params"]}
    assert qkv == {f"transformer.h.{i}.attn.c_attn.weight" for i in range(persona.model.n_layer)}

    params = jm.init_params(persona.model, jax.random.PRNGKey(0), token_counts=np.ones(persona.model.vocab_size, np.int64))
    labels = jr.muon_labels(params)
    from parity.convert import _flatten, flax_key_to_torch

    muon_j = {flax_key_to_torch(p) for p, lab in _flatten(labels["params"]) if lab.startswith("muon")}
    qkv_j = {flax_key_to_torch(p) for p, lab in _flatten(labels["params"]) if lab == "muon_qkv"}
    assert muon_j == muon_t and qkv_j == qkv


def test_muon_learning_rate_follows_the_schedule():
    recipe = registry.get("alan_turing").recipe
    model = GPT(registry.build("baseline", add=("muon",)).model)
    opt = tr.build_optimizer(model, recipe)
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    tr.optimizer_step(model, opt, recipe, 500)
    from dreamteam.config import learning_rate

    lrs = sorted({g["lr"] for g in opt.param_groups})
    expected = sorted({learning_rate(500, recipe), learning_rate(500, recipe) * recipe.muon_lr / recipe.learning_rate})
    assert lrs == pytest.approx(expected, rel=1e-15)


def test_without_the_component_the_recipe_is_plain_adamw():
    persona = registry.build("alan_turing", remove=("muon",))
    model = model_of(persona)
    assert isinstance(tr.build_optimizer(model, persona.recipe), torch.optim.AdamW)


def test_bad_muon_settings():
    with pytest.raises(ConfigError):
        Recipe(muon_ns_steps=0)
    with pytest.raises(ConfigError):
        Recipe(muon_momentum=1.0)
    with pytest.raises(ValueError):
        tmuon.Muon([dict(params=[torch.nn.Parameter(torch.zeros(3))], use_muon=True, lr=0.1)])
    with pytest.raises(ValueError):
        jmuon.newton_schulz(jnp.zeros((2, 2, 2)))
