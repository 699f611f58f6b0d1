import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamteam.components import COMPONENTS, STEP_SLOTS
from dreamteam.config import GPTConfig
from jaxmodel import model as jm


@pytest.fixture(scope="module")
def params():
    return jm.init_params(GPTConfig(), jax.random.PRNGKey(0))


def test_parameter_tree_shapes(params):
    p = params["params"]["transformer"]
    assert p["wte"]["weight"].shape == (50304, 32) and p["wpe"]["weight"].shape == (64, 32)
    assert p["h_3"]["attn"]["c_attn"]["weight"].shape == (96, 32)  # (out, in), as torch.nn.Linear
    assert p["h_0"]["mlp"]["c_proj"]["weight"].shape == (32, 128)
    assert "lm_head" not in params["params"]  # tied to wte
    assert sum(a.size for a in jax.tree.leaves(params)) == 50304 * 32 + 64 * 32 + 4 * (64 + 3072 + 1024 + 4096 + 4096) + 32


def test_causality(params):
    cfg = GPTConfig()
    idx = np.random.default_rng(0).integers(0, 50257, (2, 64))
    changed = idx.copy()
    changed[:, 40] = (changed[:, 40] + 1) % 50257
    a = jm.GPT(cfg).apply(params, idx)
    b = jm.GPT(cfg).apply(params, changed)
    np.testing.assert_array_equal(a[:, :40], b[:, :40])
    assert not np.allclose(a[:, 40:], b[:, 40:])


def test_attention_rows_are_distributions():
    q, k = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 2, 5, 4))
    w = jm.causal_attention_weights(q, k)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert np.all(np.triu(np.asarray(w[0, 0]), 1) == 0)


def test_layernorm_normalizes():
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 32)) * 5 + 2
    y = jm.LayerNorm().apply({"params": {"weight": jnp.ones(32)}}, x)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-3)


def test_initial_loss_is_near_uniform(params):
    idx, targets = np.random.default_rng(1).integers(0, 50257, (2, 4, 64))  # targets independent of the inputs
    assert float(jm.loss_fn(params, GPTConfig(), idx, targets)) == pytest.approx(math.log(50304), abs=0.05)


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_each_component_module_fills_exactly_the_model_slots_it_declares(name):
    """jaxmodel/<name>.py's FILLS holds one entry for each slot of the model its declaration names (the training
    step's slots are the loops'): the model finds a component by its name alone."""
    module = importlib.import_module(f"jaxmodel.{name}")
    assert set(getattr(module, "FILLS", {})) == set(COMPONENTS[name].slots) - set(STEP_SLOTS)
