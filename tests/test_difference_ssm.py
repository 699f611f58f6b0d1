"""difference_ssm: convolution = recurrence, closed-form kernel = matrix powers, causality, lambda -> 0,
in both frameworks (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import difference_ssm as js
from jaxmodel import model as jm
from torchport import difference_ssm as ts
from torchport.model import GPT

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

D_, M, T = 6, 4, 50


def ssm_params(seed=0, m=M, theta_scale=1.0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=D_) * theta_scale
    return theta, rng.normal(size=(D_, m)) * 0.5, rng.normal(size=(D_, m)) * 0.5, rng.normal(size=D_)


def conv_jax(theta, B, C, Dv, u):
    theta, B, C, Dv, u = map(jnp.asarray, (theta, B, C, Dv, u))
    return np.asarray(js.causal_convolution(u, js.closed_form_kernel(theta, B, C, u.shape[1])) + Dv * u)


def conv_torch(theta, B, C, Dv, u):
    theta, B, C, Dv, u = map(torch.from_numpy, (theta, B, C, Dv, u))
    return (ts.causal_convolution(u, ts.closed_form_kernel(theta, B, C, u.shape[1])) + Dv * u).numpy()


def recur_jax(theta, B, C, Dv, u):
    s = jnp.zeros((u.shape[0], D_, B.shape[1]))
    ys = []
    for t in range(u.shape[1]):
        y, s = js.recurrent_step(*map(jnp.asarray, (theta, B, C, Dv, u[:, t])), s)
        ys.append(np.asarray(y))
    return np.stack(ys, axis=1)


def recur_torch(theta, B, C, Dv, u):
    s = torch.zeros(u.shape[0], D_, B.shape[1], dtype=torch.float64)
    ys = []
    for t in range(u.shape[1]):
        y, s = ts.recurrent_step(*map(torch.from_numpy, (theta, B, C, Dv, np.ascontiguousarray(u[:, t]))), s)
        ys.append(y.numpy())
    return np.stack(ys, axis=1)


FRAMEWORKS = [pytest.param(conv_jax, recur_jax, id="jax"), pytest.param(conv_torch, recur_torch, id="torch")]


@pytest.mark.parametrize("conv,recur", FRAMEWORKS)
@pytest.mark.parametrize("m", [1, 2, 4])
def test_convolution_equals_recurrence(conv, recur, m):
    theta, B, C, Dv = ssm_params(m=m)
    u = np.random.default_rng(1).normal(size=(2, T, D_))
    y_conv, y_rec = conv(theta, B, C, Dv, u), recur(theta, B, C, Dv, u)
    assert np.abs(y_conv).max() > 1.0  # a real signal, not a vanishing one
    np.testing.assert_allclose(y_conv, y_rec, rtol=0, atol=1e-10)


def matrix_power_kernel(theta, B, C, T):
    """K_k = C A^k B by repeated multiplication, A = lambda (I + N), per channel."""
    m = B.shape[1]
    N = np.eye(m, k=1)  # (N s)_i = s_{i+1}
    K = np.zeros((len(theta), T))
    for d, th in enumerate(theta):
        A = (1 / (1 + np.exp(-th))) * (np.eye(m) + N)
        P = np.eye(m)
        for k in range(T):
            K[d, k] = C[d] @ P @ B[d]
            P = A @ P
    return K


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_closed_form_kernel_equals_matrix_powers(framework):
    theta, B, C, _ = ssm_params(seed=3, theta_scale=2.0)
    ref = matrix_power_kernel(theta, B, C, 64)
    if framework == "jax":
        got = np.asarray(js.closed_form_kernel(*map(jnp.asarray, (theta, B, C)), 64))
    else:
        got = ts.closed_form_kernel(*map(torch.from_numpy, (theta, B, C)), 64).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert np.abs(ref).max() > 1.0


def tiny_cfg(**kw):
    return GPTConfig(vocab_size=64, block_size=24, n_layer=2, n_head=2, n_embd=8,
                     components=("difference_ssm",), difference_ssm_layers=(0,), **kw)


def torch_layer(cfg, seed=0):
    torch.manual_seed(seed)
    return GPT(cfg).double().transformer.h[0].attn


def jax_layer(cfg, seed=0):
    params = jm.init_params(cfg, jax.random.PRNGKey(seed), jnp.float64)
    return js.DifferenceSSM(cfg), {"params": params["params"]["transformer"]["h_0"]["attn"]}


def test_layer_is_causal_in_both_frameworks():
    cfg = tiny_cfg()
    x = np.random.default_rng(4).normal(size=(2, 24, 8))
    x2 = x.copy()
    x2[:, 10] += 3.0
    layer = torch_layer(cfg)
    with torch.no_grad():
        a, b = layer(torch.from_numpy(x)).numpy(), layer(torch.from_numpy(x2)).numpy()
    mod, v = jax_layer(cfg)
    aj, bj = np.asarray(mod.apply(v, jnp.asarray(x))), np.asarray(mod.apply(v, jnp.asarray(x2)))
    for a, b in ((a, b), (aj, bj)):
        np.testing.assert_array_equal(a[:, :10], b[:, :10])
        assert np.abs(a[:, 10:] - b[:, 10:]).min(axis=-1).max() > 0  # and later outputs do change
        assert np.all(np.abs(a[:, 11:] - b[:, 11:]).max(axis=-1) > 0)


@pytest.mark.parametrize("conv", [conv_jax, conv_torch], ids=["jax", "torch"])
def test_lambda_to_zero_leaves_no_memory(conv):
    """With lambda -> 0 the state forgets at once: s_t = B u_t, so y_t = (D + C . B) u_t, a per-channel
    scaling with no mixing across time; with C . B = 0 it is exactly D u."""
    theta, B, C, Dv = ssm_params(seed=5)
    theta = np.full(D_, -80.0)  # lambda = sigmoid(-80) ~ 1.8e-35
    u = np.random.default_rng(6).normal(size=(2, T, D_))
    np.testing.assert_allclose(conv(theta, B, C, Dv, u), (Dv + (C * B).sum(-1)) * u, rtol=0, atol=1e-12)
    C0 = C.copy()
    C0[:, 1] = 0.0
    B0 = np.zeros_like(B)
    B0[:, 1] = B[:, 1]  # input only into register 1, which C does not read: C . B = 0 (but C N B = C_0 B_1 != 0)
    np.testing.assert_allclose(conv(theta, B0, C0, Dv, u), Dv * u, rtol=0, atol=1e-12)
    # and with a living lambda the same parameters do mix across time
    assert np.abs(conv(np.zeros(D_), B0, C0, Dv, u) - Dv * u).max() > 1e-2


def test_generation_by_steps_equals_the_training_forward():
    cfg = tiny_cfg()
    x = np.random.default_rng(7).normal(size=(2, 24, 8))
    layer = torch_layer(cfg, seed=1)
    with torch.no_grad():
        full = layer(torch.from_numpy(x)).numpy()
        s, outs = layer.initial_state(2), []
        for t in range(24):
            o, s = layer.step(torch.from_numpy(np.ascontiguousarray(x[:, t])), s)
            outs.append(o.numpy())
    np.testing.assert_allclose(np.stack(outs, 1), full, rtol=0, atol=1e-12)
    mod, v = jax_layer(cfg, seed=1)
    full_j = np.asarray(mod.apply(v, jnp.asarray(x)))
    s, outs = jnp.zeros((2, 8, cfg.difference_ssm_order)), []
    for t in range(24):
        o, s = mod.apply(v, jnp.asarray(x[:, t]), s, method=js.DifferenceSSM.step)
        outs.append(np.asarray(o))
    np.testing.assert_allclose(np.stack(outs, 1), full_j, rtol=0, atol=1e-12)


def test_layers_parameters_and_errors():
    cfg = registry.build("baseline", add=("difference_ssm",)).model
    model = GPT(cfg)
    names = {n for n, _ in model.named_parameters()}
    for i in (0, 2):
        assert {f"transformer.h.{i}.attn.{p}" for p in ("theta", "B", "C", "D", "c_in.weight", "c_proj.weight")} <= names
        assert model.transformer.h[i].attn.B.shape == (32, 4)
    for i in (1, 3):
        assert f"transformer.h.{i}.attn.c_attn.weight" in names
    lam = torch.sigmoid(model.transformer.h[0].attn.theta.detach())
    assert float(lam.min()) > 0 and float(lam.max()) < 1
    with pytest.raises(ConfigError, match="difference_ssm_layers"):
        GPTConfig(components=("difference_ssm",), difference_ssm_layers=(4,))
    with pytest.raises(ConfigError, match="difference_ssm_order"):
        GPTConfig(components=("difference_ssm",), difference_ssm_order=0)


def test_anatomy_traces_a_model_with_ssm_layers():
    from torchport.anatomy import trace

    cfg = tiny_cfg()
    torch.manual_seed(0)
    out = trace(GPT(cfg), torch.randint(0, 64, (1, 12)))
    w = out["attention"]
    assert w.shape == (2, 1, 2, 12, 12)
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, rtol=1e-6)
    assert float(torch.triu(w[0, 0, 0], 1).abs().max()) == 0.0  # causal
    from jaxmodel.anatomy import trace as jtrace  # noqa: F401  the Flax side sows the same map

    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64)
    _, state = jm.GPT(cfg).apply(params, jnp.zeros((1, 12), jnp.int32), mutable=["intermediates"])
    assert state["intermediates"]["transformer"]["h_0"]["attn"]["attention_weights"][0].shape == (1, 2, 12, 12)
