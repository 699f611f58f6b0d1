import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam.config import Recipe
from jaxmodel import recipe as jr

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


@pytest.mark.parametrize("scale", [0.1, 3.0])
def test_clip_grad_norm_matches_torch_exactly(scale):
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(5, 3)) * scale, "b": rng.normal(size=(7,)) * scale}
    clipped, _ = jr.clip_grad_norm(1.0).update(jax.tree.map(jnp.asarray, grads), None)
    tensors = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    for t, k in zip(tensors, grads):
        np.testing.assert_allclose(np.asarray(clipped[k]), t.grad.numpy(), rtol=0, atol=1e-15)
    total = np.sqrt(sum((np.asarray(v) ** 2).sum() for v in clipped.values()))
    assert total <= 1.0 + 1e-12


def test_weight_decay_mask_spares_vectors():
    mask = jr.decay_mask({"w": jnp.zeros((2, 2)), "g": jnp.zeros(2)})
    assert mask == {"w": True, "g": False}


def test_adamw_first_step_is_lr_times_sign_plus_decay():
    # at t = 1, m_hat / sqrt(v_hat) = g / |g| exactly, so the update is -lr * (sign(g) + wd * p) (eps aside)
    recipe = Recipe(grad_clip=0.0, eps=0.0)
    p = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]])}
    g = {"w": jnp.array([[0.3, -0.1], [2.0, -5.0]])}
    opt = jr.build_optimizer(recipe, 10)
    u, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_allclose(u["w"], -3e-4 * (np.sign(g["w"]) + 0.1 * p["w"]), rtol=1e-12)
