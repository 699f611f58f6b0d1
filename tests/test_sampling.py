"""Samplers (min_p, typical, top_k, temperature) in both frameworks: their defining sets, the inverse-CDF
draw, and exact parity of the sampled ids given the same uniform numbers."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam.config import GPTConfig, Persona
from jaxmodel import sampling as js
from torchport import sampling as ts

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


def jax_probs(fn, z, *a):
    return np.asarray(getattr(js, fn)(jnp.asarray(z), *a))


def torch_probs(fn, z, *a):
    return getattr(ts, fn)(torch.from_numpy(z), *a).numpy()


SIDES = [pytest.param(jax_probs, id="jax"), pytest.param(torch_probs, id="torch")]


def logits(seed=0, B=6, V=40, scale=2.0):
    return np.random.default_rng(seed).normal(size=(B, V)) * scale


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("probs", SIDES)
@pytest.mark.parametrize("p_min", [0.0, 0.05, 0.3, 1.0])
def test_min_p_keeps_exactly_the_tokens_above_p_min_times_max(probs, p_min):
    z = logits(1)
    p = softmax(z)
    q = probs("min_p_probs", z, p_min)
    keep = p >= p_min * p.max(-1, keepdims=True)
    np.testing.assert_array_equal(q > 0, keep)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-14)
    np.testing.assert_allclose(q, np.where(keep, p, 0) / np.where(keep, p, 0).sum(-1, keepdims=True), atol=1e-15)
    if p_min == 1.0:
        assert (keep.sum(-1) == 1).all()  # only the mode


def typical_reference(p, tau):
    """Brute force: ids by |-log p - H| (stable), the shortest prefix with mass >= tau."""
    H = -(p * np.log(p)).sum()
    order = np.argsort(np.abs(-np.log(p) - H), kind="stable")
    mass = np.cumsum(p[order])
    m = int(np.argmax(mass >= tau - 1e-15)) + 1 if tau < mass[-1] else len(p)
    return set(order[:m].tolist()), order, m


@pytest.mark.parametrize("probs", SIDES)
@pytest.mark.parametrize("tau", [0.2, 0.5, 0.9, 0.999, 1.0])
def test_typical_keeps_the_smallest_set_closest_to_the_entropy_reaching_tau(probs, tau):
    z = logits(2)
    q = probs("typical_probs", z, tau)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-14)
    for row, (zr, qr) in enumerate(zip(z, q)):
        p = softmax(zr)
        kept, order, m = typical_reference(p, tau)
        assert set(np.flatnonzero(qr > 0).tolist()) == kept, row
        assert p[list(kept)].sum() >= tau - 1e-12  # reaches tau
        assert m == 1 or p[order[: m - 1]].sum() < tau  # one fewer does not
        np.testing.assert_allclose(qr[list(kept)], p[list(kept)] / p[list(kept)].sum(), rtol=1e-13)


@pytest.mark.parametrize("probs", SIDES)
def test_typical_ties_break_by_lower_id(probs):
    # four equiprobable ids: all at the same distance from the entropy; tau 0.5 keeps the two lowest ids
    q = probs("typical_probs", np.zeros((1, 4)), 0.5)
    np.testing.assert_allclose(q[0], [0.5, 0.5, 0, 0], atol=1e-15)
    q = probs("top_k_probs", np.zeros((1, 4)), 3)
    np.testing.assert_allclose(q[0], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-15)


@pytest.mark.parametrize("probs", SIDES)
def test_top_k_and_temperature(probs):
    z = logits(3)
    q = probs("top_k_probs", z, 5)
    assert ((q > 0).sum(-1) == 5).all()
    assert np.all(np.take_along_axis(q, np.argmax(z, -1)[:, None], -1) > 0)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-14)
    np.testing.assert_allclose(probs("top_k_probs", z, 40, 0.5), softmax(z / 0.5), atol=1e-15)


@pytest.mark.parametrize("side", ["jax", "torch"])
def test_draw_is_the_inverse_cdf(side):
    q = np.array([[0.1, 0.0, 0.4, 0.5, 0.0]])
    us = np.array([0.0, 0.0999, 0.1, 0.3, 0.4999, 0.5, 0.9, 0.999999])
    want = [0, 0, 2, 2, 2, 3, 3, 3]
    if side == "jax":
        got = [int(js.draw(jnp.asarray(q), jnp.array([u]))[0]) for u in us]
    else:
        got = [int(ts.draw(torch.from_numpy(q), torch.tensor([u]))[0]) for u in us]
    assert got == want
    # unnormalized q: u scales with the total; u -> 1 never returns an id without mass
    if side == "jax":
        assert int(js.draw(jnp.asarray(q * 3), jnp.array([1.0 - 1e-17]))[0]) == 3
    else:
        assert int(ts.draw(torch.from_numpy(q * 3), torch.tensor([1.0 - 1e-17], dtype=torch.float64))[0]) == 3


@pytest.mark.parametrize("sampler", ["min_p", "typical", "top_k", "temperature"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampled_ids_parity(sampler, dtype):
    rng = np.random.default_rng(7)
    z = (rng.normal(size=(64, 200)) * 3).astype(dtype)
    u = rng.random(64)
    opts = dict(temperature=0.8, p_min=0.05, tau=0.9, top_k=10)
    ids_j = np.asarray(js.sample(jnp.asarray(z), jnp.asarray(u), sampler, **opts))
    ids_t = ts.sample(torch.from_numpy(z), torch.from_numpy(u), sampler, **opts).numpy()
    np.testing.assert_array_equal(ids_j, ids_t)
    # the draws are spread: more than a few distinct ids (the test would pass trivially on argmax)
    assert len(set(ids_t.tolist())) > 10


def test_sampling_follows_the_distribution():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    u = np.random.default_rng(0).random(20000)
    ids = ts.sample(torch.from_numpy(np.repeat(z, len(u), 0)), torch.from_numpy(u), "min_p", p_min=0.2).numpy()
    # min_p 0.2 of max 0.5: drops 0.05, keeps 0.5, 0.3, 0.15 (renormalized by 0.95)
    freq = np.bincount(ids, minlength=4) / len(u)
    np.testing.assert_allclose(freq, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], atol=0.01)


def test_bad_options():
    z = jnp.zeros((1, 3))
    with pytest.raises(ValueError, match="p_min"):
        js.min_p_probs(z, 1.5)
    with pytest.raises(ValueError, match="tau"):
        ts.typical_probs(torch.zeros(1, 3), 0.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        ts.sample(torch.zeros(1, 3), torch.zeros(1), "nucleus")
    with pytest.raises(ValueError, match="temperature"):
        js.sample(z, jnp.zeros(1), "min_p", temperature=0.0)


@pytest.mark.parametrize("sampler", ["min_p", "typical"])
def test_generate_parity_through_the_model(sampler):
    from parity.checks import Pair

    cfg = GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=8)
    pair = Pair.make(Persona("tiny", cfg), "float64")
    u = np.random.default_rng(3).random((12, 2))  # 12 new tokens, 2 rows: past block_size
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    out_j = np.asarray(js.generate(pair.params, cfg, idx, u, sampler, temperature=1.5))
    out_t = ts.generate(pair.torch_model, torch.from_numpy(idx), torch.from_numpy(u), sampler, temperature=1.5).numpy()
    np.testing.assert_array_equal(out_j, out_t)
    assert out_t.shape == (2, 15) and len(set(out_t[:, 3:].ravel().tolist())) > 3


def test_generate_parity_through_a_model_with_ngram_memory():
    """The model's next-token distribution is the gated mixture with the n-gram memory of its statistics: both
    frameworks sample the same ids from it (jaxmodel's generate is given the statistics the model was built
    with), and the memory changes what is drawn."""
    from parity.checks import Pair

    cfg = GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=8, components=("ngram_memory",),
                    ngram_memory_gate_bias=2.0)
    pair = Pair.make(Persona("tiny", cfg), "float64")
    assert pair.ngram_stats is not None
    u = np.random.default_rng(4).random((12, 2))
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    out_j = np.asarray(js.generate(pair.params, cfg, idx, u, "min_p", ngram_stats=pair.ngram_stats))
    out_t = ts.generate(pair.torch_model, torch.from_numpy(idx), torch.from_numpy(u), "min_p").numpy()
    np.testing.assert_array_equal(out_j, out_t)
    plain = Pair.make(Persona("tiny", cfg.replace(components=())), "float64")
    out_plain = ts.generate(plain.torch_model, torch.from_numpy(idx), torch.from_numpy(u), "min_p").numpy()
    assert (out_plain != out_t).any()


class NoFloat64(torch.utils._python_dispatch.TorchDispatchMode):
    """Raises on any op that takes or makes a float64 tensor: what MPS, which has no float64, would refuse."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat = torch.utils._pytree.tree_leaves((args, kwargs, out))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in flat) or kwargs.get("dtype") == torch.float64:
            raise AssertionError(f"float64 in {func}")
        return out


def test_the_no_float64_mode_catches_float64_sampling():
    z = torch.from_numpy(logits(4).astype(np.float32))
    with pytest.raises(AssertionError, match="float64"), NoFloat64():
        ts.sample(z, torch.full((z.shape[0],), 0.5), "min_p")  # the CPU samples in float64


@pytest.mark.parametrize("sampler", ["min_p", "typical", "top_k", "temperature"])
def test_sampling_on_a_device_without_float64(monkeypatch, sampler):
    """With the CPU treated as a device without float64, sampling runs in float32 throughout and draws the
    float64 path's ids wherever u is not within float32 rounding of a boundary of the cumulative sum."""
    rng = np.random.default_rng(11)
    z = (rng.normal(size=(256, 300)) * 3).astype(np.float32)
    u = rng.random(256).astype(np.float32)
    opts = dict(temperature=0.8, p_min=0.05, tau=0.9, top_k=10)
    q64 = ts.sampler_probs(torch.from_numpy(z), sampler, **opts)
    ids64 = ts.draw(q64, torch.from_numpy(u)).numpy()
    assert q64.dtype == torch.float64
    monkeypatch.setattr(ts, "NO_FLOAT64", frozenset({"cpu"}))
    with NoFloat64():
        q32 = ts.sampler_probs(torch.from_numpy(z), sampler, **opts)
        ids32 = ts.draw(q32, torch.from_numpy(u))
    assert q32.dtype == torch.float32 and ids32.dtype == torch.int64
    np.testing.assert_allclose(q32.numpy(), q64.numpy(), atol=1e-6)
    np.testing.assert_array_equal(q32.numpy() > 0, q64.numpy() > 0)  # the same kept sets
    cdf = (torch.cumsum(q64, -1) / q64.sum(-1, keepdim=True)).numpy()
    clear = np.abs(cdf - u[:, None].astype(np.float64)).min(-1) > 1e-5  # u not at a boundary
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ids32.numpy()[clear], ids64[clear])
    assert len(set(ids32.numpy().tolist())) > 10


def test_cpu_sampling_is_float64_as_before():
    """On the CPU the probabilities are float64 softmax(z / T), bit for bit what the sampler computed before
    it chose its dtype per device (the jax parity above depends on it)."""
    z = torch.from_numpy(logits(5).astype(np.float32))
    p = ts.sampler_probs(z, "temperature", temperature=0.7)
    assert p.dtype == torch.float64
    assert torch.equal(p, torch.softmax(z.double() / 0.7, dim=-1))
    u = np.random.default_rng(5).random(z.shape[0])
    # u as a list, a float64 array or a float64 tensor: the same draws (host numbers stay float64)
    ids = ts.sample(z, torch.from_numpy(u), "min_p")
    assert torch.equal(ts.sample(z, u.tolist(), "min_p"), ids) and torch.equal(ts.sample(z, u, "min_p"), ids)


def test_generate_without_float64(monkeypatch):
    from torchport.model import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=8))
    u = torch.from_numpy(np.random.default_rng(3).random((12, 2)).astype(np.float32))
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out64 = ts.generate(model, idx, u, "typical", temperature=1.5)
    monkeypatch.setattr(ts, "NO_FLOAT64", frozenset({"cpu"}))
    with NoFloat64():
        out32 = ts.generate(model, idx, u, "typical", temperature=1.5)
    assert out32.shape == (2, 15) and torch.equal(out32[:, :3], idx)
    assert torch.equal(out32, out64)  # seeded: no u of these 24 lies within float32 rounding of a boundary
