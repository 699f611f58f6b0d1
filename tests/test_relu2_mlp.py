"""relu2_mlp from its mathematics (dreamteam/components/relu2_mlp.py), in both frameworks: the MLP is
c_proj(relu(c_fc x)^2), silent where every pre-activation is negative, homogeneous of degree 2, with the derivative
2 relu(z) of its activation; it starts from the baseline MLP's weights, and the two models compute the same."""

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
from jaxmodel import relu2_mlp as jrelu2
from torchport import relu2_mlp as trelu2

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

CFG = registry.build("baseline", add=("relu2_mlp",)).model  # D = 32, hidden 128


def torch_mlp(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return trelu2.Relu2MLP(cfg).double()


def flax_params_of(mlp):
    """The Flax variables of a torch Relu2MLP: the same names and shapes (c_fc/weight, ...)."""
    tree = {}
    for name, p in mlp.state_dict().items():
        layer, leaf = name.split(".")
        tree.setdefault(layer, {})[leaf] = jnp.asarray(p.numpy())
    return {"params": tree}


def both(mlp, x_np):
    """(torch output, Flax output) of the same MLP at x, as float64 numpy arrays."""
    y_t = mlp(torch.from_numpy(x_np)).detach().numpy()
    y_j = np.asarray(jrelu2.Relu2MLP(CFG.replace(bias=mlp.c_fc.bias is not None)).apply(flax_params_of(mlp), jnp.asarray(x_np)))
    return y_t, y_j


@pytest.mark.parametrize("bias", [False, True])
def test_output_is_c_proj_of_the_squared_relu_of_c_fc(bias):
    cfg = CFG.replace(bias=bias)
    mlp = torch_mlp(cfg)
    if bias:  # biases away from their zero init, so that they count
        with torch.no_grad():
            mlp.c_fc.bias.normal_(0.0, 0.02)
            mlp.c_proj.bias.normal_(0.0, 0.02)
    x = np.random.default_rng(0).normal(size=(2, 5, 32))
    W1, W2 = mlp.c_fc.weight.detach().numpy(), mlp.c_proj.weight.detach().numpy()
    b1 = mlp.c_fc.bias.detach().numpy() if bias else 0.0
    b2 = mlp.c_proj.bias.detach().numpy() if bias else 0.0
    z = x @ W1.T + b1
    expected = np.maximum(z, 0.0) ** 2 @ W2.T + b2
    assert (z < 0).any() and (z > 0).any()  # both branches of the ReLU are exercised
    for y in both(mlp, x):
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-15)


def test_no_value_and_no_gradient_where_every_pre_activation_is_negative():
    mlp = torch_mlp()
    with torch.no_grad():
        mlp.c_fc.weight.abs_().neg_()  # W1 < 0 and x > 0: every pre-activation W1 x is negative
    x = torch.from_numpy(np.random.default_rng(1).uniform(0.1, 1.0, size=(2, 5, 32)))
    y = mlp(x)
    assert torch.equal(y, torch.zeros_like(y))
    y.pow(2).sum().add(y.sum()).backward()
    assert torch.equal(mlp.c_fc.weight.grad, torch.zeros_like(mlp.c_fc.weight))
    y_j = both(mlp, x.numpy())[1]
    assert np.array_equal(y_j, np.zeros_like(y_j))


def test_without_biases_the_mlp_is_homogeneous_of_degree_two():
    mlp = torch_mlp()
    x = np.random.default_rng(2).normal(size=(2, 5, 32))
    for a in (0.5, 3.0):
        for y_ax, y_x in zip(both(mlp, a * x), both(mlp, x)):
            np.testing.assert_allclose(y_ax, a**2 * y_x, rtol=1e-12, atol=1e-15)


def test_the_activation_derivative_is_two_relu_and_continuous_at_zero():
    z = np.array([-2.0, -1e-8, -0.0, 0.0, 1e-8, 0.5, 3.0])
    want = 2 * np.maximum(z, 0.0)
    zt = torch.tensor(z, requires_grad=True)
    trelu2.relu2(zt).sum().backward()
    np.testing.assert_array_equal(zt.grad.numpy(), want)
    np.testing.assert_array_equal(np.asarray(jax.grad(lambda v: jrelu2.relu2(v).sum())(jnp.asarray(z))), want)
    # at +1e-8 ReLU's own derivative is already 1; the squared ReLU's is 2e-8, next to its 0 at 0
    zr = torch.tensor(z, requires_grad=True)
    torch.relu(zr).sum().backward()
    assert zr.grad[4] == 1.0 and abs(zt.grad[4].item() - zt.grad[3].item()) == 2e-8


def test_it_starts_from_the_baseline_mlp_and_computes_something_else():
    """The same parameters and initial values as the baseline (seed 0, both frameworks); other logits."""
    base = registry.get("baseline").model
    models = torch_models_at_seed(base, CFG)
    sd_base, sd_relu2 = (m.state_dict() for m in models)
    assert list(sd_base) == list(sd_relu2)
    assert all(torch.equal(sd_base[k], sd_relu2[k]) for k in sd_base)
    p_base, p_relu2 = (jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64) for cfg in (base, CFG))
    leaves_base, tree_base = jax.tree.flatten(p_base)
    leaves_relu2, tree_relu2 = jax.tree.flatten(p_relu2)
    assert tree_base == tree_relu2 and all(np.array_equal(a, b) for a, b in zip(leaves_base, leaves_relu2))
    idx = torch.randint(0, base.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(models[0](idx)[0], models[1](idx)[0])


def test_baseline_with_relu2_mlp_parity_float64():
    assert_float64_parity(registry.build("baseline", add=("relu2_mlp",)))


def test_twenty_training_steps_run_and_lower_the_loss(short_val_data, tmp_path):
    assert_twenty_steps_lower_the_loss(registry.build("baseline", add=("relu2_mlp",)), short_val_data, tmp_path)
