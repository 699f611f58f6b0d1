"""rms_embedding from its mathematics (dreamteam/components/rms_embedding.py), in both frameworks: every embedding
row RMS-normalized and scaled by one gain shared by all ids, in the input and in the tied head; the rows' lengths
carry nothing (scale invariance, a gradient orthogonal to each row), the logits stay bounded whatever a row does,
it starts as the baseline with rows rescaled to the init std, and the two models compute the same."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from component_helpers import (
    assert_float64_parity,
    assert_twenty_steps_lower_the_loss,
    torch_models_at_seed,
)

from dreamteam import registry
from jaxmodel import model as jm
from jaxmodel import rms_embedding as jemb
from torchport import rms_embedding as temb

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

CFG = registry.build("baseline", add=("rms_embedding",)).model
V, D = 300, CFG.n_embd


def rows_and_gain(seed=0):
    rng = np.random.default_rng(seed)
    wte = rng.normal(0.0, 0.02, size=(V, D)) * rng.uniform(0.01, 100.0, size=(V, 1))  # rows of very unequal length
    g = rng.uniform(0.5, 2.0, size=D)
    return wte, g


def torch_module(g, cfg=CFG):
    """The torch RMSEmbedding, float64, its gain set to g."""
    m = temb.RMSEmbedding(cfg).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(g))
    return m


def both(wte, g, cfg=CFG):
    """E from the torch module and from the Flax one, float64 numpy."""
    m = torch_module(g, cfg)
    E_t = m.compose(torch.from_numpy(wte)).detach().numpy()
    E_j = np.asarray(jemb.rms_embedding(cfg).apply({"params": {"weight": jnp.asarray(g)}}, jnp.asarray(wte)))
    return E_t, E_j


def test_each_row_is_divided_by_its_rms_and_scaled_by_the_shared_gain():
    wte, g = rows_and_gain()
    ms = (wte**2).mean(-1, keepdims=True)
    expected = wte / np.sqrt(ms + CFG.rms_embedding_eps) * g
    for E in both(wte, g):
        np.testing.assert_allclose(E, expected, rtol=1e-13, atol=0)
        # every row the same weighted mean square, ms / (ms + eps), whatever its length was (1e-2 .. 1e2 times)
        np.testing.assert_allclose(((E / g) ** 2).mean(-1), (ms / (ms + CFG.rms_embedding_eps))[:, 0], rtol=1e-12)


def test_a_rows_length_changes_nothing_and_its_gradient_is_orthogonal_to_it():
    """Exact at eps = 0 (here 1e-300, negligible against every row's mean square): up to rounding."""
    cfg = CFG.replace(rms_embedding_eps=1e-300)
    wte, g = rows_and_gain(1)
    c = np.random.default_rng(2).uniform(0.1, 10.0, size=(V, 1))
    for E_scaled, E in zip(both(c * wte, g, cfg), both(wte, g, cfg)):
        np.testing.assert_allclose(E_scaled, E, rtol=1e-13)
    h = np.random.default_rng(3).normal(size=(7, D))
    target = np.arange(7) * 11

    def loss_t(w):
        logits = torch.from_numpy(h) @ torch_module(g, cfg).compose(w).T
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(target))

    w = torch.from_numpy(wte).requires_grad_()
    loss_t(w).backward()
    grad_t = w.grad.numpy()

    def loss_j(w):
        E = jemb.rms_embedding(cfg).apply({"params": {"weight": jnp.asarray(g)}}, w)
        logp = jax.nn.log_softmax(jnp.asarray(h) @ E.T)
        return -logp[jnp.arange(7), target].mean()

    grad_j = np.asarray(jax.grad(loss_j)(jnp.asarray(wte)))
    np.testing.assert_allclose(grad_j, grad_t, rtol=1e-10, atol=1e-18)
    for grad in (grad_t, grad_j):
        cosine = (grad * wte).sum(-1) / (np.linalg.norm(grad, axis=-1) * np.linalg.norm(wte, axis=-1) + 1e-300)
        assert np.abs(cosine).max() < 1e-12


def test_logits_stay_bounded_where_a_row_grows_without_bound():
    """|h . E_v| <= |h| sqrt(D) max|g| for every id; the baseline's logit of a row grown 1e6-fold grows with it."""
    wte, g = rows_and_gain(4)
    wte[5] = -1e6 * np.abs(wte[5])  # what Adam does to an id never seen: its row keeps moving along one direction
    h = np.abs(np.random.default_rng(5).normal(size=(4, D)))
    bound = np.linalg.norm(h, axis=-1, keepdims=True) * np.sqrt(D) * np.abs(g).max()
    for E in both(wte, g):
        logits = h @ E.T
        assert (np.abs(logits) <= bound * (1 + 1e-12)).all()
    assert (np.abs(h @ wte[5]) > 1e3 * bound[:, 0]).all()


def test_it_starts_as_the_baseline_with_rows_at_the_init_std():
    """The baseline's parameters and initial values (seed 0, both frameworks) and one more, the gain at 0.02;
    every row of E then has RMS 0.02 (up to eps)."""
    base = registry.get("baseline").model
    models = torch_models_at_seed(base, CFG)
    sd_base, sd = (m.state_dict() for m in models)
    assert set(sd) - set(sd_base) == {"transformer.wte_norm.weight"}
    assert all(torch.equal(sd_base[k], sd[k]) for k in sd_base)
    assert torch.equal(sd["transformer.wte_norm.weight"], torch.full((D,), 0.02).double())  # float32's 0.02
    E = models[1].token_embedding_matrix().detach().numpy()
    ms = sd["transformer.wte.weight"].pow(2).mean(-1).numpy()
    np.testing.assert_allclose(np.sqrt((E**2).mean(-1)), 0.02 * np.sqrt(ms / (ms + CFG.rms_embedding_eps)), rtol=1e-6)
    p_base, p = (jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64) for cfg in (base, CFG))
    p_t = dict(p["params"]["transformer"])
    np.testing.assert_allclose(np.asarray(p_t.pop("wte_norm")["weight"]), 0.02, rtol=1e-7)
    leaves_base, tree_base = jax.tree.flatten(p_base["params"])
    leaves, tree = jax.tree.flatten({**p["params"], "transformer": p_t})
    assert tree_base == tree and all(np.array_equal(a, b) for a, b in zip(leaves_base, leaves))


@pytest.mark.parametrize("persona", ["baseline", "leonardo_da_vinci"])
def test_rms_embedding_parity_float64(persona):
    assert_float64_parity(registry.build(persona, add=("rms_embedding",)))


def test_twenty_training_steps_run_and_lower_the_loss(short_val_data, tmp_path):
    assert_twenty_steps_lower_the_loss(registry.build("baseline", add=("rms_embedding",)), short_val_data, tmp_path)
