"""jaxmodel/fast.py: the chunked tied-head loss equals the reference, value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamteam import registry
from jaxmodel import model as jm
from jaxmodel.fast import fused_loss, linear_cross_entropy, linear_cross_entropy_bias

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 64])
def test_linear_cross_entropy_equals_full_softmax(chunk):
    rng = np.random.default_rng(chunk)
    h, w = jnp.asarray(rng.normal(size=(50, 6))), jnp.asarray(rng.normal(size=(97, 6)))
    t = jnp.asarray(rng.integers(0, 97, 50))

    def reference(h, w):
        return optax.softmax_cross_entropy_with_integer_labels(h @ w.T, t).mean()

    value, (gh, gw) = jax.value_and_grad(lambda h, w: 2.5 * linear_cross_entropy(h, w, t, chunk), argnums=(0, 1))(h, w)
    ref, (rh, rw) = jax.value_and_grad(lambda h, w: 2.5 * reference(h, w), argnums=(0, 1))(h, w)
    assert abs(float(value - ref)) <= 1e-12
    assert float(jnp.max(jnp.abs(gh - rh))) <= 1e-12 and float(jnp.max(jnp.abs(gw - rw))) <= 1e-12


@pytest.mark.parametrize("persona", sorted(registry.PERSONAS))
def test_fused_loss_equals_model_loss(persona):
    from dreamteam.components.ngram_memory import stats_for
    from parity.checks import synthetic_stream, synthetic_token_counts

    cfg = registry.get(persona).model
    counts = synthetic_token_counts(cfg)  # for the frequency-built components (adaptive_softmax, good_turing_prior)
    stats = stats_for(cfg, synthetic_stream(cfg))  # ngram_memory's counts
    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64, token_counts=counts)
    x, y = np.random.default_rng(1).integers(0, 50257, (2, 2, 64))
    for held_out in (False, True):  # the evaluation loss and the training loss (ngram_memory's held-out estimate)
        ref, g_ref = jax.value_and_grad(jm.loss_fn)(params, cfg, x, y, counts, ngram_stats=stats, held_out=held_out)
        fast, g_fast = jax.value_and_grad(fused_loss)(params, cfg, x, y, token_counts=counts, ngram_stats=stats,
                                                      held_out=held_out)
        assert abs(float(fast - ref)) <= 1e-12
        err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)))
        assert err <= 1e-12


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_linear_cross_entropy_with_bias_equals_full_softmax(chunk):
    rng = np.random.default_rng(chunk + 100)
    h, w = jnp.asarray(rng.normal(size=(50, 6))), jnp.asarray(rng.normal(size=(97, 6)))
    b, t = jnp.asarray(3 * rng.normal(size=97)), jnp.asarray(rng.integers(0, 97, 50))

    def reference(h, w, b):
        return optax.softmax_cross_entropy_with_integer_labels(h @ w.T + b, t).mean()

    fast = jax.value_and_grad(lambda h, w, b: 2.5 * linear_cross_entropy_bias(h, w, b, t, chunk), argnums=(0, 1, 2))
    value, grads = fast(h, w, b)
    ref, grads_r = jax.value_and_grad(lambda h, w, b: 2.5 * reference(h, w, b), argnums=(0, 1, 2))(h, w, b)
    assert abs(float(value - ref)) <= 1e-12
    assert max(float(jnp.max(jnp.abs(g - r))) for g, r in zip(grads, grads_r)) <= 1e-12
    P, Y = jax.nn.softmax(h @ w.T + b), jax.nn.one_hot(t, 97)
    assert float(jnp.max(jnp.abs(grads[2] / 2.5 - (P - Y).mean(0)))) <= 1e-12
