"""Components from different personas switched on together: the code paths where they meet compute the same
numbers as their separate references (fast against eager, tiled against naive), in both frameworks."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import model as jm
from jaxmodel import succession_objective as jso
from jaxmodel.laplace_bias import decay_bias, laplace_bias
from jaxmodel.tiled_attention import naive_attention, tiled_attention
from parity.checks import synthetic_token_counts
from torchport import succession_objective as tso
from torchport.model import GPT

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

# good_turing_prior (an output bias) with succession_objective (a smoothed loss with z-loss)
CFG = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=96,
                components=("good_turing_prior", "succession_objective"), succession_objective_zloss=1e-2)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CFG.vocab_size, size=(3, CFG.block_size + 1))
    return ids[:, :-1], ids[:, 1:]


def test_fused_objective_with_output_bias_equals_eager_torch():
    counts = synthetic_token_counts(CFG)
    torch.manual_seed(0)
    model = GPT(CFG, token_counts=counts).double()
    with torch.no_grad():
        model.lm_head.bias.add_(torch.randn_like(model.lm_head.bias))  # a bias far from its init
    x, y = (torch.from_numpy(a) for a in batch())
    results = []
    for fast in (False, True):
        model.zero_grad(set_to_none=True)
        loss = tso.training_loss(model, x, y, fast=fast, chunk=5)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (eager, g_eager), (fast, g_fast) = results
    assert abs(fast - eager) <= 1e-12
    assert g_fast.keys() == g_eager.keys() and "lm_head.bias" in g_fast
    for name in g_eager:
        assert torch.allclose(g_fast[name], g_eager[name], rtol=0, atol=1e-12), name


def test_fused_objective_with_output_bias_equals_eager_jax():
    counts = synthetic_token_counts(CFG)
    params = jm.init_params(CFG, jax.random.PRNGKey(0), jnp.float64, token_counts=counts)
    bias = params["params"]["lm_head"]["bias"]
    params["params"]["lm_head"]["bias"] = bias + jax.random.normal(jax.random.PRNGKey(1), bias.shape, bias.dtype)
    x, y = (jnp.asarray(a) for a in batch())
    eager = jax.value_and_grad(jso.make_training_loss(CFG, counts, fast=False))(params, x, y)
    fast = jax.value_and_grad(jso.make_training_loss(CFG, counts, fast=True, chunk=5))(params, x, y)
    assert abs(float(fast[0]) - float(eager[0])) <= 1e-12
    errors = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fast[1], eager[1])
    assert max(jax.tree.leaves(errors)) <= 1e-12


@pytest.mark.parametrize("block", [1, 3, 8, 16])
def test_tiled_attention_with_laplace_decay_equals_naive_with_its_bias(block):
    rng = np.random.default_rng(block)
    B, H, T, E = 2, 3, 13, 4
    q, k, v = (jnp.asarray(rng.normal(size=(B, H, T, E))) for _ in range(3))
    s_H = jnp.asarray([0.5, 0.05, 1e-3])
    bias_HxTxT = laplace_bias(s_H, jnp.arange(T))
    w = jax.nn.softmax(jnp.einsum("bhqe,bhke->bhqk", q, k) / np.sqrt(E) + bias_HxTxT, axis=-1)
    expected = jnp.einsum("bhqk,bhkf->bhqf", w, v)
    assert float(jnp.max(jnp.abs(tiled_attention(q, k, v, block, partial(decay_bias, s_H)) - expected))) <= 1e-12
    # without a decay the tiled path is plain causal attention still
    assert float(jnp.max(jnp.abs(tiled_attention(q, k, v, block) - naive_attention(q, k, v)))) <= 1e-12


def test_model_with_tiled_attention_and_laplace_bias_equals_the_untiled_model():
    base = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=12, vocab_size=64, components=("laplace_bias",))
    tiled = base.replace(components=("laplace_bias", "tiled_attention"), tiled_attention_block=5)
    params = jm.init_params(base, jax.random.PRNGKey(0), jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 12)))
    diff = jm.GPT(tiled).apply(params, x) - jm.GPT(base).apply(params, x)
    assert float(jnp.max(jnp.abs(diff))) <= 1e-12


@pytest.mark.parametrize("components, match", [
    (("laplace_bias", "memory_tape"), "memory_tape"),
    (("adaptive_softmax", "good_turing_prior"), "adaptive_softmax"),
    (("adaptive_softmax", "succession_objective"), "adaptive_softmax"),
    (("moe_mlp", "succession_objective"), "moe_mlp"),
    (("moe_mlp", "fixed_point_qat"), "moe_mlp"),
])
def test_combinations_without_a_shared_path_are_refused(components, match):
    with pytest.raises(ConfigError, match=match):
        GPTConfig(components=components)
