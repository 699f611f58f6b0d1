"""dyt from its mathematics (dreamteam/components/dyt.py), in both frameworks: DyT(x) = weight * tanh(alpha x) (+ bias)
elementwise, bounded by |weight| + |bias|, linear for small inputs within the cubic term of tanh's series, with
the derivative weight * x * (1 - tanh^2(alpha x)) in alpha; it starts from the baseline's weights with one alpha
per norm, and the two models compute the same."""

import dataclasses

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
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import dyt as jdyt
from jaxmodel import model as jm
from torchport import dyt as tdyt

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

D = 32
LEONARDO_DYT = registry.build("leonardo_da_vinci", add=("dyt",), remove=("rms_qknorm",))


def torch_dyt(bias: bool, alpha: float = 0.7, seed: int = 0):
    """A float64 DyT with weight (and bias) drawn away from their init, so that they count."""
    norm = tdyt.DyT(D, bias, alpha).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.alpha.fill_(alpha)  # exactly alpha in float64, not float32's nearest
        norm.weight.copy_(torch.randn(D, generator=g, dtype=torch.float64))
        if bias:
            norm.bias.copy_(torch.randn(D, generator=g, dtype=torch.float64))
    return norm


def flax_params_of(norm):
    """The Flax parameters of a torch DyT: the same names (alpha, weight, bias) and values."""
    return {k: jnp.asarray(v.detach().numpy()) for k, v in norm.named_parameters()}


def both(norm, x_np):
    """(torch output, Flax output) of the same DyT at x, as float64 numpy arrays."""
    params = flax_params_of(norm)
    y_t = norm(torch.from_numpy(x_np)).detach().numpy()
    y_j = jdyt.DyT(norm.bias is not None, norm.alpha.item()).apply({"params": params}, jnp.asarray(x_np))
    return y_t, np.asarray(y_j)


@pytest.mark.parametrize("bias", [False, True])
def test_output_is_weight_times_tanh_of_alpha_x_plus_bias(bias):
    norm = torch_dyt(bias)
    x = 3 * np.random.default_rng(0).normal(size=(2, 5, D))
    w = norm.weight.detach().numpy()
    b = norm.bias.detach().numpy() if bias else 0.0
    expected = w * np.tanh(0.7 * x) + b
    for y in both(norm, x):
        np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("bias", [False, True])
def test_output_is_bounded_and_saturates_where_a_layernorm_would_not(bias):
    """|DyT(x)| <= |weight| + |bias| whatever x; huge inputs give +-weight + bias exactly, and finite outputs."""
    norm = torch_dyt(bias, seed=1)
    w = norm.weight.detach().numpy()
    b = norm.bias.detach().numpy() if bias else np.zeros(D)
    x = np.random.default_rng(1).normal(size=(4, D)) * np.array([[1.0], [1e3], [1e150], [1e300]])
    for y in both(norm, x):
        assert np.isfinite(y).all()
        assert (np.abs(y) <= np.abs(w) + np.abs(b) + 1e-15).all()
        np.testing.assert_allclose(y[2:], np.sign(x[2:]) * w + b, rtol=1e-15)


def test_small_inputs_pass_linearly_within_the_cubic_term():
    """tanh(z) = z - z^3/3 + ...: |DyT(x) - weight alpha x| <= |weight| |alpha x|^3 / 3."""
    norm = torch_dyt(False, alpha=1.3, seed=2)
    w = norm.weight.detach().numpy()
    x = 1e-3 * np.random.default_rng(2).normal(size=(3, D))
    for y in both(norm, x):
        err = np.abs(y - w * 1.3 * x)
        assert (err <= np.abs(w) * np.abs(1.3 * x) ** 3 / 3 * (1 + 1e-6) + 1e-18).all()
        assert err.max() > 0  # the cubic term is there: not a linear map


def test_gradient_in_alpha_is_weight_x_sech_squared():
    norm = torch_dyt(True, alpha=0.9, seed=3)
    rng = np.random.default_rng(3)
    x, u = rng.normal(size=(2, 5, D)) * 2, rng.normal(size=(2, 5, D))  # u: the upstream gradient
    w = norm.weight.detach().numpy()
    want = float((u * w * x * (1 - np.tanh(0.9 * x) ** 2)).sum())
    (norm(torch.from_numpy(x)) * torch.from_numpy(u)).sum().backward()
    assert norm.alpha.grad.item() == pytest.approx(want, rel=1e-12)
    params = flax_params_of(norm)
    grad = jax.grad(lambda p: (jdyt.DyT(True, 0.9).apply({"params": p}, jnp.asarray(x)) * u).sum())(params)
    assert float(grad["alpha"][0]) == pytest.approx(want, rel=1e-12)


def test_it_starts_from_the_baseline_weights_with_one_alpha_per_norm():
    """The baseline's parameters and initial values (seed 0, both frameworks), and one alpha per norm (two per
    block and ln_f: 9) at dyt_alpha."""
    base = registry.get("baseline").model
    cfg = registry.build("baseline", add=("dyt",)).model.replace(dyt_alpha=0.7)
    sd_base, sd = (m.state_dict() for m in torch_models_at_seed(base, cfg))
    added = set(sd) - set(sd_base)
    assert added == {f"transformer.h.{i}.{n}.alpha" for i in range(4) for n in ("ln_1", "ln_2")} | {"transformer.ln_f.alpha"}
    assert all(torch.equal(sd[k], torch.tensor([0.7]).double()) for k in added)  # float32's 0.7
    assert all(torch.equal(sd_base[k], sd[k]) for k in sd_base)
    p_base, p = (jm.init_params(c, jax.random.PRNGKey(0), jnp.float64) for c in (base, cfg))
    flat_base = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(p_base)[0]}
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(p)[0]}
    alphas = [k for k in set(flat) - set(flat_base)]
    assert len(alphas) == 9 and all(k.endswith("['alpha']") and float(flat[k][0]) == pytest.approx(0.7, rel=1e-7) for k in alphas)
    assert all(np.array_equal(flat_base[k], flat[k]) for k in flat_base)


def test_dyt_and_rms_qknorm_both_fill_the_norm_slot():
    with pytest.raises(ConfigError, match="norm"):
        GPTConfig(components=("rms_qknorm", "dyt"))


@pytest.mark.parametrize("persona", [registry.build("baseline", add=("dyt",)), LEONARDO_DYT], ids=lambda p: p.name)
def test_dyt_parity_float64(persona):
    assert_float64_parity(persona)


def test_twenty_training_steps_run_and_lower_the_loss(short_val_data, tmp_path):
    """At the baseline's rate, 3e-4, twenty steps move a DyT model too little to tell (tanh(alpha x) of the 0.02-scale
    initial stream is 50 times smaller than a LayerNorm's output); at the personas' peak rate, 3e-3, they do."""
    persona = registry.build("baseline", add=("dyt",))
    persona = dataclasses.replace(persona, recipe=persona.recipe.replace(learning_rate=3e-3))
    assert_twenty_steps_lower_the_loss(persona, short_val_data, tmp_path)
