"""succession_objective and posterior_mean: properties from their mathematics, in both frameworks, and the
fused chunked loss against the eager one in float64 (forward and backward)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamteam import registry
from dreamteam.components import succession_objective as succession
from dreamteam.config import ConfigError, GPTConfig
from dreamteam.components.posterior_mean import decay_at
from jaxmodel import fast as jfast
from jaxmodel import posterior_mean as jpm
from jaxmodel import succession_objective as jso
from parity import checks
from torchport import fast as tfast
from torchport import succession_objective as tso
from torchport.model import GPT
from torchport.posterior_mean import PosteriorMean

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

N, D, V = 40, 6, 53


def random_problem(seed=0):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(N, D)) * 2
    W = rng.normal(size=(V, D))
    t = rng.integers(0, V, size=N)
    counts = rng.poisson(3.0, size=V) * (rng.random(V) < 0.6)  # many unseen ids
    return h, W, t, counts, succession.prior(counts)


def test_prior_is_add_one_and_sums_to_one():
    counts = np.array([0, 3, 0, 7, 1])
    pi = succession.prior(counts)
    np.testing.assert_allclose(pi, (counts + 1) / (11 + 5), rtol=1e-15)
    assert pi.sum() == pytest.approx(1.0, abs=1e-15) and np.all(pi > 0)
    _, _, _, _, pi = random_problem()
    assert abs(pi.sum() - 1.0) < 1e-14
    for bad in (None, np.array([1, -1]), np.zeros((2, 2), int), np.array([0.5, 1.0])):
        with pytest.raises(ValueError):
            succession.prior(bad)


def ce_and_cross_prior(z, t, pi):
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    logp = z - lse[:, None]
    return -logp[np.arange(len(t)), t].mean(), -(logp @ pi).mean(), lse


def objective_torch(z, t, pi, eps, a):
    return tso.succession_cross_entropy(torch.from_numpy(z), torch.from_numpy(t), torch.from_numpy(pi), eps, a).item()


def objective_jax(z, t, pi, eps, a):
    return float(jso.succession_cross_entropy(jnp.asarray(z), jnp.asarray(t), jnp.asarray(pi), eps, a))


@pytest.mark.parametrize("objective", [objective_torch, objective_jax], ids=["torch", "jax"])
def test_closed_forms_on_random_logits(objective):
    h, W, t, _, pi = random_problem(1)
    z = h @ W.T
    ce, h_pi_p, lse = ce_and_cross_prior(z, t, pi)
    assert objective(z, t, pi, 0.0, 0.0) == pytest.approx(ce, abs=1e-13)  # eps = alpha = 0: cross-entropy
    assert objective(z, t, pi, 0.0, 0.0) == pytest.approx(F.cross_entropy(torch.from_numpy(z), torch.from_numpy(t)).item(), abs=1e-13)
    for eps in (0.1, 0.37):
        assert objective(z, t, pi, eps, 0.0) == pytest.approx(ce + eps * (h_pi_p - ce), abs=1e-12)
        assert objective(z, t, pi, eps, 1e-3) == pytest.approx(ce + eps * (h_pi_p - ce) + 1e-3 * (lse**2).mean(), abs=1e-12)
    # the targets q = (1 - eps) onehot + eps pi: -sum q log p written out
    q = 0.2 * pi[None, :] + 0.8 * np.eye(V)[t]
    logp = z - lse[:, None]
    assert objective(z, t, pi, 0.2, 0.0) == pytest.approx(-(q * logp).sum(1).mean(), abs=1e-12)


def test_gradient_in_the_logits():
    # d/dz of the per-token objective: (1 + 2 a lse) P - (1 - eps) Y - eps pi
    h, W, t, _, pi = random_problem(2)
    z = torch.from_numpy(h @ W.T).requires_grad_()
    eps, a = 0.1, 0.01
    (g,) = torch.autograd.grad(tso.succession_cross_entropy(z, torch.from_numpy(t), torch.from_numpy(pi), eps, a) * N, z)
    P = torch.softmax(z, -1).detach().numpy()
    lse = torch.logsumexp(z, -1).detach().numpy()
    expect = (1 + 2 * a * lse)[:, None] * P - (1 - eps) * np.eye(V)[t] - eps * pi[None, :]
    np.testing.assert_allclose(g.numpy(), expect, atol=1e-13)
    gj = jax.grad(lambda zz: jso.succession_cross_entropy(zz, jnp.asarray(t), jnp.asarray(pi), eps, a) * N)(jnp.asarray(z.detach().numpy()))
    np.testing.assert_allclose(np.asarray(gj), expect, atol=1e-13)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
@pytest.mark.parametrize("eps,a", [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-2), (0.25, 1e-3)])
def test_torch_fused_equals_eager_float64(chunk, eps, a):
    h, W, t, _, pi = random_problem(3)
    t[::6] = -1  # ignored tokens
    h_t, W_t = torch.from_numpy(h).requires_grad_(), torch.from_numpy(W).requires_grad_()
    t_t, pi_t = torch.from_numpy(t), torch.from_numpy(pi)

    def value_and_grads(fn):
        loss = fn()
        return (loss.item(), *(g.numpy() for g in torch.autograd.grad(2.5 * loss, (h_t, W_t))))

    fused = value_and_grads(lambda: tfast.linear_cross_entropy(h_t, W_t, t_t, chunk, smoothing_eps=eps, prior=pi_t, z_loss=a))
    eager = value_and_grads(lambda: tso.succession_cross_entropy(h_t @ W_t.T, t_t, pi_t, eps, a))
    assert abs(fused[0] - eager[0]) <= 1e-12
    for f, e in zip(fused[1:], eager[1:]):
        np.testing.assert_allclose(f, e, atol=1e-12)
    assert np.abs(fused[1][t == -1]).max() == 0.0  # ignored tokens get no gradient
    with torch.no_grad():  # the no-gradient path: the same value
        assert abs(tfast.linear_cross_entropy(h_t, W_t, t_t, chunk, smoothing_eps=eps, prior=pi_t, z_loss=a).item() - eager[0]) <= 1e-12


@pytest.mark.parametrize("chunk", [1, 16, 64])
@pytest.mark.parametrize("eps,a", [(0.1, 0.0), (0.0, 1e-2), (0.25, 1e-3)])
def test_jax_fused_equals_eager_float64(chunk, eps, a):
    h, W, t, _, pi = random_problem(4)
    h, W, t, pi = map(jnp.asarray, (h, W, t, pi))
    fused = jax.value_and_grad(lambda h, W: 2.5 * jfast.linear_succession_loss(h, W, None, t, pi, chunk, eps, a), argnums=(0, 1))(h, W)
    eager = jax.value_and_grad(lambda h, W: 2.5 * jso.succession_cross_entropy(h @ W.T, t, pi, eps, a), argnums=(0, 1))(h, W)
    assert abs(float(fused[0]) - float(eager[0])) <= 1e-12
    for f, e in zip(fused[1], eager[1]):
        np.testing.assert_allclose(np.asarray(f), np.asarray(e), atol=1e-12)


def test_model_training_losses_fast_equal_eager_and_evaluation_stays_cross_entropy():
    persona = registry.build("baseline", add=("succession_objective",))
    cfg = persona.model
    pair = checks.Pair.make(persona, "float64")
    x, y = (torch.from_numpy(a) for a in checks.fixed_batches(cfg, 1, 2)[0])
    model = pair.torch_model
    fast, eager = tso.training_loss(model, x, y, fast=True), tso.training_loss(model, x, y, fast=False)
    assert abs(fast.item() - eager.item()) <= 1e-12
    logits, reported = model(x, y)  # what every evaluation reads: plain cross-entropy
    assert reported.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item(), abs=1e-14)
    assert abs(reported.item() - eager.item()) > 1e-4  # the objective is not the cross-entropy
    counts = checks.synthetic_token_counts(cfg)
    j_fast = jso.make_training_loss(cfg, counts, fast=True)(pair.params, x.numpy(), y.numpy())
    assert abs(float(j_fast) - eager.item()) <= 1e-12
    # without the component, the training loss is the plain one
    plain = GPT(GPTConfig(), token_counts=None).double()
    assert tso.training_loss(plain, x, y, fast=False).item() == plain(x, y)[1].item()
    with pytest.raises(ValueError, match="token counts"):
        tso.training_loss(GPT(cfg).double(), x, y)


def test_config_checks():
    with pytest.raises(ConfigError, match="succession_objective_eps"):
        GPTConfig(succession_objective_eps=1.0)
    with pytest.raises(ConfigError, match="succession_objective_zloss"):
        GPTConfig(succession_objective_zloss=-1e-4)
    with pytest.raises(ConfigError, match="posterior_mean_decay"):
        GPTConfig(posterior_mean_decay=1.0)


def test_decay_schedule():
    assert decay_at(0, 0.999) == pytest.approx(0.1) and decay_at(8, 0.999) == pytest.approx(0.5)
    assert decay_at(8989, 0.999) < 0.999 and decay_at(8990, 0.999) == pytest.approx(0.999, abs=1e-15) and decay_at(9000, 0.999) == 0.999 == decay_at(10**6, 0.999)
    assert decay_at(5, 0.0) == 0.0  # decay 0: the average is the current weights
    with pytest.raises(ValueError):
        decay_at(-1, 0.9)


def test_posterior_mean_is_the_weighted_average_of_the_trajectory():
    # avg_T = prod d * theta_init + sum_t (1 - d_t) prod_{s > t} d_s theta_t, in both frameworks
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    decay = 0.6
    pm = PosteriorMean(model, decay)
    thetas = [model.weight.detach().clone().numpy()]
    params_j = {"w": jnp.asarray(thetas[0])}
    avg_j = params_j
    for t in range(12):
        with torch.no_grad():
            model.weight.add_(torch.randn(2, 3, dtype=torch.float64))
        pm.update()
        thetas.append(model.weight.detach().clone().numpy())
        avg_j = jpm.update(avg_j, {"w": jnp.asarray(thetas[-1])}, decay_at(t, decay))
    d = [decay_at(t, decay) for t in range(12)]
    coef = [np.prod(d)] + [(1 - d[t]) * np.prod(d[t + 1 :]) for t in range(12)]
    assert sum(coef) == pytest.approx(1.0, abs=1e-14)
    expect = sum(c * th for c, th in zip(coef, thetas))
    np.testing.assert_allclose(pm.module.weight.numpy(), expect, atol=1e-13)
    np.testing.assert_allclose(np.asarray(avg_j["w"]), expect, atol=1e-13)
    np.testing.assert_array_equal(model.weight.detach().numpy(), thetas[-1])  # the raw weights keep theirs
    assert not any(p.requires_grad for p in pm.module.parameters())


def test_posterior_mean_keeps_the_tied_head_and_state_dict():
    model = GPT(registry.get("pierre_simon_laplace").model)
    pm = PosteriorMean(model, 0.9)
    assert pm.module.lm_head.weight is pm.module.transformer.wte.weight
    assert set(pm.module.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    pm.update()  # d_0 = 0.1: 90 % of the way to the new weights
    np.testing.assert_allclose((pm.module.lm_head.weight - model.lm_head.weight).detach().numpy(), -0.1, atol=1e-6)
