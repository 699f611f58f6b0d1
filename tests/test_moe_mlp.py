"""moe_mlp from its own mathematics, in both frameworks: one expert is a dense MLP, experts are exchangeable,
ties route to the lower index, the auxiliary-loss-free bias balances a skewed router, and its update agrees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import model as jm
from jaxmodel import moe_mlp as jmoe
from parity.convert import flax_to_torch
from torchport import model as tm
from torchport import moe_mlp as tmoe

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

D = 8


def cfg_of(**kw):
    return GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=D, components=("moe_mlp",), **kw)


def jax_variables(cfg, seed=0):
    return jax.tree.map(lambda a: a.astype(jnp.float64),
                        jmoe.MoEMLP(cfg).init(jax.random.PRNGKey(seed), jnp.zeros((1, 1, D))))


def jax_moe(cfg, variables, x):
    y, state = jmoe.MoEMLP(cfg).apply({k: variables[k] for k in ("params", "buffers")}, jnp.asarray(x), mutable=["moe_mlp"])
    return np.asarray(y), np.asarray(jax.tree.leaves(state["moe_mlp"])[0])


def torch_moe(cfg, variables):
    m = tmoe.MoEMLP(cfg).double()
    m.load_state_dict(flax_to_torch({k: variables[k] for k in ("params", "buffers")}, template=m.state_dict()))
    return m


def run_both(cfg, variables, x):
    y_j, load_j = jax_moe(cfg, variables, x)
    m = torch_moe(cfg, variables)
    y_t = m(torch.from_numpy(x)).detach().numpy()
    return y_j, y_t, load_j, m.last_load.numpy()


def dense_mlp(x, w_fc, w_proj):
    h = torch.nn.functional.gelu(torch.tensor(x) @ torch.tensor(w_fc).T)
    return (h @ torch.tensor(w_proj).T).numpy()


X = np.random.default_rng(0).normal(size=(2, 5, D))


@pytest.mark.parametrize("shared", [0, 1])
def test_one_expert_top_1_is_a_dense_mlp(shared):
    cfg = cfg_of(moe_mlp_experts=1, moe_mlp_top_k=1, moe_mlp_shared=shared)
    assert cfg.moe_hidden == 4 * D // (1 + shared)
    v = jax_variables(cfg)
    p = v["params"]
    w_fc, w_proj = np.asarray(p["experts_fc"][0]), np.asarray(p["experts_proj"][0])
    if shared:  # shared + routed expert = one MLP of the concatenated hidden units
        w_fc = np.concatenate([np.asarray(p["c_fc"]["weight"]), w_fc], 0)
        w_proj = np.concatenate([np.asarray(p["c_proj"]["weight"]), w_proj], 1)
    want = dense_mlp(X, w_fc, w_proj)
    y_j, y_t, load_j, load_t = run_both(cfg, v, X)
    np.testing.assert_allclose(y_j, want, atol=1e-15)
    np.testing.assert_allclose(y_t, want, atol=1e-15)
    # and the model's own dense MLP with these weights (hidden 4 D) computes the same
    mlp = jm.MLP(GPTConfig(n_embd=D, n_head=2))
    y_mlp = mlp.apply({"params": {"c_fc": {"weight": w_fc}, "c_proj": {"weight": w_proj}}}, jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(y_mlp), want, atol=1e-15)
    assert load_j.tolist() == load_t.tolist() == [X.shape[0] * X.shape[1]]


@pytest.mark.parametrize("score", ["sigmoid", "softmax"])
def test_permuting_experts_with_their_router_rows_changes_nothing(score):
    cfg = cfg_of(moe_mlp_experts=6, moe_mlp_top_k=2, moe_mlp_score=score, bias=True)
    v = jax_variables(cfg, seed=1)
    rng = np.random.default_rng(1)
    v["buffers"]["router_bias"] = jnp.asarray(rng.normal(size=6) * 0.01)
    v["params"]["experts_fc_bias"] = jnp.asarray(rng.normal(size=(6, cfg.moe_hidden)) * 0.1)
    y_j, y_t, load_j, load_t = run_both(cfg, v, X)
    perm = rng.permutation(6)
    w = jax.tree.map(lambda a: a, v)
    for k in ("experts_fc", "experts_proj", "experts_fc_bias", "experts_proj_bias"):
        w["params"][k] = v["params"][k][perm]
    w["params"]["router"]["weight"] = v["params"]["router"]["weight"][perm]
    w["buffers"]["router_bias"] = v["buffers"]["router_bias"][perm]
    z_j, z_t, lz_j, lz_t = run_both(cfg, w, X)
    np.testing.assert_allclose(z_j, y_j, atol=1e-15)
    np.testing.assert_allclose(z_t, y_t, atol=1e-15)
    np.testing.assert_array_equal(lz_j, load_j[perm])
    np.testing.assert_array_equal(lz_t, load_t[perm])
    # permuting the experts without their router rows does change the output
    w["params"]["router"]["weight"] = v["params"]["router"]["weight"]
    w["buffers"]["router_bias"] = v["buffers"]["router_bias"]
    assert not np.allclose(run_both(cfg, w, X)[1], y_t, atol=1e-6)


def test_ties_route_to_the_lower_expert_index():
    cfg = cfg_of(moe_mlp_experts=4, moe_mlp_top_k=2)
    v = jax_variables(cfg)
    v["params"]["router"]["weight"] = jnp.zeros((4, D))  # every score 1/2: all tied
    _, _, load_j, load_t = run_both(cfg, v, X)
    n = X.shape[0] * X.shape[1]
    assert load_j.tolist() == load_t.tolist() == [n, n, 0, 0]
    v["buffers"]["router_bias"] = jnp.array([0.0, 0.0, 0.0, 1e-3])  # the bias breaks the tie for expert 3
    _, _, load_j, load_t = run_both(cfg, v, X)
    assert load_j.tolist() == load_t.tolist() == [n, 0, 0, n]


def skewed(cfg, seed=2):
    """A router that sends almost every token to experts 0 and 1, and inputs for it."""
    v = jax_variables(cfg, seed)
    w = np.random.default_rng(seed).normal(size=(cfg.moe_mlp_experts, D)) * 0.1
    w[:2] += 2.0  # inputs below have a positive mean: experts 0 and 1 win
    v["params"]["router"]["weight"] = jnp.asarray(w)
    x = np.random.default_rng(seed + 1).normal(size=(4, 32, D)) + 1.0
    return v, x


def imbalance(load):
    return float(np.max(load) / np.mean(load))


def test_balancing_bias_drives_the_loads_toward_uniform():
    cfg = cfg_of(moe_mlp_experts=8, moe_mlp_top_k=2, moe_mlp_bias_rate=0.01)
    v, x = skewed(cfg)
    steps, tail = 300, 100

    @jax.jit
    def jax_step(variables):
        _, state = jmoe.MoEMLP(cfg).apply(variables, jnp.asarray(x), mutable=["moe_mlp"])
        return jmoe.update_router_bias(variables, state["moe_mlp"], cfg.moe_mlp_bias_rate), jax.tree.leaves(state["moe_mlp"])[0]

    # JAX: forward, then the bias update from the sown loads, repeatedly on the same input
    variables = {k: v[k] for k in ("params", "buffers")}
    loads_j = []
    for _ in range(steps):
        variables, load = jax_step(variables)
        loads_j.append(np.asarray(load))
    # torch: the same loop through the module's buffer
    m = torch_moe(cfg, v)
    loads_t = []
    for _ in range(steps):
        m(torch.from_numpy(x))
        loads_t.append(m.last_load.numpy().copy())
        m.update_router_bias()
    assert imbalance(loads_j[0]) > 3.0  # almost all the load on 2 of 8 experts: max/mean near 4
    # sign updates of a fixed size settle into a small cycle around balance: the loads averaged over it
    # are nearly uniform
    assert imbalance(np.mean(loads_j[-tail:], 0)) < 1.2 and imbalance(np.mean(loads_t[-tail:], 0)) < 1.2
    np.testing.assert_array_equal(np.array(loads_t), np.array(loads_j))
    np.testing.assert_allclose(m.router_bias.numpy(), np.asarray(variables["buffers"]["router_bias"]), atol=1e-12)


def test_bias_update_rule_and_parity():
    cfg = cfg_of(moe_mlp_experts=4, moe_mlp_top_k=2, moe_mlp_bias_rate=0.5)
    v = jax_variables(cfg)
    load = np.array([10.0, 2.0, 4.0, 4.0])  # mean 5
    b0 = np.array([0.1, -0.2, 0.0, 0.3])
    new = jmoe.update_router_bias({"params": v["params"], "buffers": {"router_bias": jnp.asarray(b0)}},
                                  {"load": (jnp.asarray(load),)}, cfg.moe_mlp_bias_rate)
    want = b0 + 0.5 * np.array([-1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(new["buffers"]["router_bias"]), want)
    m = tmoe.MoEMLP(cfg).double()
    m.router_bias.copy_(torch.from_numpy(b0))
    m.last_load = torch.from_numpy(load)
    m.update_router_bias()
    np.testing.assert_array_equal(m.router_bias.numpy(), want)
    m.update_router_bias()  # no new forward: no second update
    np.testing.assert_array_equal(m.router_bias.numpy(), want)
    load_eq = np.full(4, 5.0)  # balanced: sign(0) = 0, no move
    new = jmoe.update_router_bias(new, {"load": (jnp.asarray(load_eq),)}, 0.5)
    np.testing.assert_array_equal(np.asarray(new["buffers"]["router_bias"]), want)


def test_whole_model_trajectory_moves_the_bias_equally():
    """Parity's trajectory includes the bias update after every step; the bias ends away from 0, equal."""
    from parity import checks

    persona = registry.build("baseline", add=("moe_mlp",))
    persona = type(persona)(persona.name, persona.model.replace(vocab_size=128, n_layer=2, moe_mlp_bias_rate=0.01),
                            persona.recipe)
    pair = checks.Pair.make(persona, "float64")
    batches = checks.fixed_batches(persona.model, 3, 2)
    _, params_j, _, _ = checks.jax_trajectory(pair.params, persona, batches, pair.token_counts)
    checks.torch_trajectory(pair.torch_model, persona, batches)
    b_j = np.asarray(params_j["buffers"]["transformer"]["h_1"]["mlp"]["router_bias"])
    b_t = pair.torch_model.transformer.h[1].mlp.router_bias.numpy()
    np.testing.assert_array_equal(b_t, b_j)
    assert np.abs(b_t).max() > 0


def test_active_parameters_match_the_dense_mlp_and_bad_options():
    cfg = GPTConfig(components=("moe_mlp",))
    active = (cfg.moe_mlp_shared + cfg.moe_mlp_top_k) * 2 * cfg.n_embd * cfg.moe_hidden
    assert abs(active - 8 * cfg.n_embd**2) / (8 * cfg.n_embd**2) < 0.01
    with pytest.raises(ConfigError, match="top_k"):
        GPTConfig(components=("moe_mlp",), moe_mlp_top_k=9)
    with pytest.raises(ConfigError, match="moe_mlp_score"):
        GPTConfig(components=("moe_mlp",), moe_mlp_score="relu")
    model = tm.GPT(GPTConfig(components=("moe_mlp",)))
    assert "transformer.h.0.mlp.router_bias" in model.state_dict()
    assert "transformer.h.0.mlp.router_bias" not in dict(model.named_parameters())
