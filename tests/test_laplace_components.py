"""Properties of laplace_bias and laplace_glu from their own mathematics, in both frameworks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import ConfigError, GPTConfig
from dreamteam.components.laplace_bias import inverse_softplus
from jaxmodel import laplace_bias as jlb
from jaxmodel import laplace_glu as jlg
from jaxmodel import model as jm
from parity import checks
from torchport import laplace_bias as tlb
from torchport import laplace_glu as tlg
from torchport import model as tm

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

CFG = registry.build("baseline", add=("laplace_bias",)).model.replace(block_size=16)


def torch_attention(cfg, seed=0):
    torch.manual_seed(seed)
    return tm.CausalSelfAttention(cfg).double()


def jax_params_of(attn):
    """The Flax variables of a torch CausalSelfAttention (same names and shapes)."""
    tree = {}
    for name, p in attn.state_dict().items():
        node = tree
        *path, leaf = name.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(p.numpy())
    return {"params": tree}


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_bias_is_causal_and_equals_minus_rate_times_distance(framework):
    s = np.array([0.3, 0.05, 1.7])
    T = 9
    if framework == "jax":
        b = np.asarray(jlb.laplace_bias(jnp.asarray(s), jnp.arange(T)))
    else:
        b = tlb.laplace_bias(torch.tensor(s), torch.arange(T)).numpy()
    i, j = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    for h in range(3):
        assert np.all(np.isneginf(b[h][j > i]))  # causal: no key after the query
        np.testing.assert_array_equal(b[h][j <= i], (-s[h] * (i - j))[j <= i])  # exactly -s_h (i - j)
    assert np.all(b[:, np.arange(T), np.arange(T)] == 0)


def test_initial_rates_are_alibi_slopes_after_the_softplus():
    alibi = [2.0 ** (-8 * (h + 1) / 4) for h in range(4)]
    params = jm.init_params(CFG, jax.random.PRNGKey(0), jnp.float64)
    r_j = params["params"]["transformer"]["h_0"]["attn"]["laplace_rate"]
    np.testing.assert_allclose(np.asarray(jax.nn.softplus(r_j)), alibi, rtol=1e-6)  # initialized in float32
    r_t = tm.GPT(CFG).double().transformer.h[3].attn.laplace_rate
    np.testing.assert_allclose(tlb.rates(r_t).detach().numpy(), alibi, rtol=1e-6)
    np.testing.assert_allclose(np.logaddexp(inverse_softplus(alibi), 0.0), alibi, rtol=1e-14)
    assert "wpe" not in params["params"]["transformer"] and not CFG.learned_positions


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_translation_invariance(framework):
    attn = torch_attention(CFG)
    with torch.no_grad():
        attn.laplace_rate.copy_(torch.tensor([0.5, -1.0, 1.0, 2.0]))  # rates well away from zero
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    pos = torch.arange(12)
    if framework == "torch":
        out = lambda p: attn(x, p).detach().numpy()
    else:
        params, xj = jax_params_of(attn), jnp.asarray(x.numpy())
        out = lambda p: np.asarray(jm.CausalSelfAttention(CFG).apply(params, xj, pos_T=jnp.asarray(p.numpy())))
    ref = out(pos)
    for c in (1, 17, 1000):
        np.testing.assert_array_equal(out(pos + c), ref)
    # the positions matter: stretching them (other distances) changes the output
    assert np.abs(out(2 * pos) - ref).max() > 1e-3


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_zero_rate_is_plain_causal_attention_without_positions(framework):
    plain_cfg = CFG.replace(components=())
    attn, plain = torch_attention(CFG), torch_attention(plain_cfg)
    with torch.no_grad():
        plain.load_state_dict({k: v for k, v in attn.state_dict().items() if k != "laplace_rate"})
        attn.laplace_rate.fill_(-math.inf)  # softplus(-inf) = 0: s_h = 0
    assert tlb.rates(attn.laplace_rate).abs().max().item() == 0.0
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    if framework == "torch":
        got, want = attn(x).detach().numpy(), plain(x).detach().numpy()
        # the explicit formula: softmax(q k^T / sqrt(d), causal) v, then c_proj
        q, k, v = attn.qkv(x)
        s = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), -math.inf)
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(2, 10, 32)
        np.testing.assert_allclose(got, attn.c_proj(y).detach().numpy(), rtol=1e-12, atol=1e-14)
    else:
        xj = jnp.asarray(x.numpy())
        got = np.asarray(jm.CausalSelfAttention(CFG).apply(jax_params_of(attn), xj))
        want = np.asarray(jm.CausalSelfAttention(plain_cfg).apply(jax_params_of(plain), xj))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_attention_weights_carry_the_decay_factor():
    # with q = 0 every score is the bias alone: the weights are exp(-s (i - j)) normalized over j <= i
    from jaxmodel.layers import causal_attention_weights

    s = jnp.array([0.7])
    q = jnp.zeros((1, 1, 6, 4))
    w = np.asarray(causal_attention_weights(q, q, jlb.laplace_bias(s, jnp.arange(6))))[0, 0]
    expect = np.exp(-0.7 * np.arange(6)[::-1])
    np.testing.assert_allclose(w[5], expect / expect.sum(), rtol=1e-13)
    np.testing.assert_allclose(w[3, 1] / w[3, 3], math.exp(-1.4), rtol=1e-13)


FS = [pytest.param(lambda x: np.asarray(jlg.laplace(jnp.asarray(x))), id="jax"),
      pytest.param(lambda x: tlg.laplace(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy(), id="torch")]


@pytest.mark.parametrize("f", FS)
def test_laplace_function_closed_form_and_midpoint(f):
    mu, sigma = math.sqrt(0.5), math.sqrt(1 / (4 * math.pi))
    x = np.linspace(-3, 4, 57)
    closed = np.array([0.5 * (1 + math.erf((v - mu) / (sigma * math.sqrt(2)))) for v in x])
    np.testing.assert_allclose(f(x), closed, rtol=1e-14, atol=1e-16)
    assert float(f(np.array([mu]))[0]) == 0.5
    assert np.all(np.diff(f(x)) >= 0) and f(np.array([-5.0]))[0] < 1e-12 and f(np.array([6.0]))[0] == 1.0


def gaussian_density(x):
    mu, sigma = math.sqrt(0.5), math.sqrt(1 / (4 * math.pi))
    return np.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))


def test_laplace_derivative_is_the_gaussian_density():
    x = np.linspace(-2, 3, 41)
    d_j = np.asarray(jax.vmap(jax.grad(jlg.laplace))(jnp.asarray(x)))
    np.testing.assert_allclose(d_j, gaussian_density(x), rtol=1e-12, atol=1e-300)
    xt = torch.from_numpy(x).requires_grad_()
    (d_t,) = torch.autograd.grad(tlg.laplace(xt).sum(), xt)
    np.testing.assert_allclose(d_t.numpy(), gaussian_density(x), rtol=1e-12, atol=1e-300)
    assert gaussian_density(np.array([math.sqrt(0.5)]))[0] == pytest.approx(1 / math.sqrt(1 / (4 * math.pi)) / math.sqrt(2 * math.pi))


def test_laplace_glu_width_formula_and_twins():
    cfg = registry.build("baseline", add=("laplace_glu",)).model
    assert cfg.laplace_glu_hidden == 85
    mlp = tlg.LaplaceGLU(cfg).double()
    n = sum(p.numel() for p in mlp.parameters())
    assert n == 3 * 32 * 85 and abs(n - 8 * 32 * 32) / (8 * 32 * 32) < 0.01  # 8160 against 8192
    x = torch.randn(2, 5, 32, dtype=torch.float64) * 3
    g, u = x @ mlp.c_gate.weight.T, x @ mlp.c_fc.weight.T
    expected = (0.5 * (1 + torch.erf((g - math.sqrt(0.5)) / (math.sqrt(1 / (4 * math.pi)) * math.sqrt(2)))) * u) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-13, atol=1e-13)
    params = {"params": {n: {"weight": jnp.asarray(getattr(mlp, n).weight.detach().numpy())} for n in ("c_gate", "c_fc", "c_proj")}}
    np.testing.assert_allclose(np.asarray(jlg.LaplaceGLU(cfg).apply(params, jnp.asarray(x.numpy()))), expected.detach().numpy(), rtol=1e-13, atol=1e-13)


def test_laplace_glu_gate_starts_at_unit_scale():
    # c_gate ~ N(0, 1/D): the gate's inputs have std ~1, where f ramps (mu = 0.71), not GPT-2's ~0.11 where f ~ 0
    cfg = registry.build("baseline", add=("laplace_glu",)).model
    assert cfg.laplace_glu_gate_std == pytest.approx(1 / math.sqrt(32))
    torch.manual_seed(0)
    w_t = tm.GPT(cfg).transformer.h[1].mlp.c_gate.weight.detach().numpy()
    w_j = np.asarray(jm.init_params(cfg, jax.random.PRNGKey(0))["params"]["transformer"]["h_1"]["mlp"]["c_gate"]["weight"])
    for w in (w_t, w_j):
        assert w.shape == (85, 32) and abs(w.std() - 1 / math.sqrt(32)) < 0.01
    x = np.random.default_rng(0).normal(size=(4096, 32))  # a LayerNorm'd input: unit variance per coordinate
    gate = np.asarray(jlg.laplace(jnp.asarray(x @ w_j.T)))
    assert 0.1 < gate.mean() < 0.4  # about a quarter of the gate open, not ~0.006 everywhere
    with pytest.raises(ConfigError, match="laplace_glu_gate_scale"):
        GPTConfig(laplace_glu_gate_scale=0.0)


def test_bad_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="mla"):
        GPTConfig(components=("laplace_bias", "mla"))
    with pytest.raises(ConfigError, match="golden_swiglu"):
        GPTConfig(components=("laplace_glu", "golden_swiglu"))
    with pytest.raises(ConfigError, match="laplace_bias_exponent"):
        GPTConfig(components=("laplace_bias",), laplace_bias_exponent=0.0)
    GPTConfig(components=("laplace_bias", "rope", "rms_qknorm"))  # rotary positions and the decay combine


def test_anatomy_traces_include_the_bias():
    from jaxmodel import anatomy as janatomy
    from torchport import anatomy as tanatomy

    pair = checks.Pair.make(registry.build("baseline", add=("laplace_bias",)), "float64")
    with torch.no_grad():
        for block in pair.torch_model.transformer.h:
            block.attn.laplace_rate.fill_(1.5)  # a strong decay, visible in the weights
    from parity.convert import torch_to_flax

    jparams = torch_to_flax(pair.torch_model.state_dict(), template=pair.params)
    idx = np.arange(10)[None] * 37
    a_t = tanatomy.trace(pair.torch_model, torch.from_numpy(idx))["attention"].numpy()
    a_j = np.asarray(janatomy.trace(jparams, pair.persona.model, idx)["attention"])
    np.testing.assert_allclose(a_t, a_j, atol=1e-12)
    assert a_t[0, 0, 0, 9, 0] < a_t[0, 0, 0, 9, 9] * 1e-3  # 9 steps back: e^(-9 softplus(1.5)) ~ 1e-7 of the diagonal's scale


@pytest.mark.parametrize("component", ["laplace_bias", "laplace_glu"])
def test_component_alone_parity_float64(component):
    persona = registry.build("baseline", add=(component,))
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=2, steps=20) if not r.passed]
    assert not failed, failed
