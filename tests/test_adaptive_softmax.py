"""adaptive_softmax from its own mathematics, in both frameworks: a proper distribution over every id, each
log-probability the log of its factorized product, one cluster = the full softmax, and the cheap training
loss (through the clusters) equal to the eager one; the clusters follow the train counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam.components.adaptive_softmax import adaptive_clusters, frequency_order
from dreamteam.config import ConfigError, GPTConfig, Persona
from jaxmodel import fast as jfast
from jaxmodel import model as jm
from parity import checks
from torchport import fast as tfast

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

V = 300


def counts_with_unseen(V=V, seed=0):
    c = np.random.default_rng(seed).zipf(1.5, size=V) - 1  # many zeros: unseen ids
    c[5] = c[7] = 3  # a tie: lower id first
    return c.astype(np.int64)


def cfg_of(**kw):
    return GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=16,
                     **{"components": ("adaptive_softmax",), "adaptive_softmax_cutoffs": (20, 60), **kw})


def pair_of(cfg, counts, dtype="float64"):
    pair = checks.Pair.make(Persona("t", cfg), dtype)
    if counts is not None:  # rebuild with these counts
        from torchport.model import GPT
        from parity.convert import flax_to_torch

        params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64, token_counts=counts)
        model = GPT(cfg, token_counts=counts).double()
        model.load_state_dict(flax_to_torch(params, template=model.state_dict()))
        pair = checks.Pair(pair.persona, dtype, params, model, counts)
    return pair


def both_log_probs(pair, x):
    lp_j = np.asarray(jm.GPT(pair.persona.model, pair.token_counts).apply(pair.params, jnp.asarray(x)))
    lp_t = pair.torch_model(torch.from_numpy(x), torch.from_numpy(x))[0].detach().numpy()
    return lp_j, lp_t


X = np.random.default_rng(1).integers(0, V, size=(3, 8))


def test_clusters_follow_the_counts():
    counts = counts_with_unseen()
    cl = adaptive_clusters(counts, (20, 60), 16, 2)
    n_seen = int((counts > 0).sum())
    assert cl.edges == (0, 20, 60, n_seen, V)
    assert cl.tail_widths == (8, 4, 2)
    order = cl.order
    assert (np.diff(counts[order]) <= 0).all()  # by decreasing count
    assert list(order).index(5) < list(order).index(7)  # tie: lower id first
    assert set(order[n_seen:].tolist()) == set(np.flatnonzero(counts == 0).tolist())  # last cluster: unseen
    np.testing.assert_array_equal(frequency_order(np.array([1, 3, 3, 0])), [1, 2, 0, 3])
    # cutoffs past the seen ids collapse; no unseen ids: no unseen cluster
    assert adaptive_clusters(np.arange(1, 11), (4, 50), 16, 2).edges == (0, 4, 10)


@pytest.mark.parametrize("counts_seed, tied", [(0, False), (1, False), (0, True)])
def test_probabilities_sum_to_one_and_factorize(counts_seed, tied):
    counts = counts_with_unseen(seed=counts_seed)
    cfg = cfg_of(adaptive_softmax_tied_tails=tied)
    pair = pair_of(cfg, counts)
    lp_j, lp_t = both_log_probs(pair, X)
    for lp in (lp_j, lp_t):
        assert lp.dtype == np.float64 and lp.shape == (3, 8, V)
        np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, atol=1e-13)  # every position
    np.testing.assert_allclose(lp_t, lp_j, atol=1e-12)
    # log p(w) = log of the factorized product, recomputed here by hand from the weights
    p = pair.params["params"]["transformer"]
    h = np.asarray(jm.GPT(cfg, counts).apply(pair.params, jnp.asarray(X), head=False)).reshape(-1, 16)
    cl = adaptive_clusters(counts, cfg.adaptive_softmax_cutoffs, 16, 2)
    W = np.asarray(p["wte"]["weight"])
    asm = p["adaptive_softmax"]
    z = np.concatenate([h @ W[cl.order[: cl.head_size]].T, h @ np.asarray(asm["cluster"]["weight"]).T], 1)
    p_head = np.exp(z - z.max(1, keepdims=True))
    p_head /= p_head.sum(1, keepdims=True)
    want = np.empty((h.shape[0], V))
    want[:, cl.order[: cl.head_size]] = p_head[:, : cl.head_size]
    for c, (a, b) in enumerate(zip(cl.edges[1:-1], cl.edges[2:])):
        t = asm[f"tail_{c}"]
        if tied:  # the ids' own embedding rows score the cluster's up-projected state: O_c = E_c U_c
            assert "out" not in t
            s = (h @ np.asarray(t["proj"]["weight"]).T @ np.asarray(t["up"]["weight"]).T) @ W[cl.order[a:b]].T
        else:
            s = (h @ np.asarray(t["proj"]["weight"]).T) @ np.asarray(t["out"]["weight"]).T
        pc = np.exp(s - s.max(1, keepdims=True))
        pc /= pc.sum(1, keepdims=True)
        want[:, cl.order[a:b]] = p_head[:, cl.head_size + c, None] * pc
    np.testing.assert_allclose(lp_j.reshape(-1, V), np.log(want), atol=1e-12)
    np.testing.assert_allclose(lp_t.reshape(-1, V), np.log(want), atol=1e-12)


def test_single_cluster_is_the_full_softmax():
    counts = np.arange(V, 0, -1)  # every id seen
    cfg = cfg_of(adaptive_softmax_cutoffs=(V,))
    pair = pair_of(cfg, counts)
    assert "adaptive_softmax" not in pair.params["params"]["transformer"]  # no tail, no cluster parameters
    lp_j, lp_t = both_log_probs(pair, X)
    base = GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=16)
    logits = np.asarray(jm.GPT(base).apply(pair.params, jnp.asarray(X)))  # same weights, plain tied head
    full = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    np.testing.assert_allclose(lp_j, full, atol=1e-13)
    np.testing.assert_allclose(lp_t, full, atol=1e-13)


@pytest.mark.parametrize("tied", [False, True])
def test_fused_loss_equals_the_eager_cross_entropy_and_its_gradients(tied):
    counts = counts_with_unseen()
    pair = pair_of(cfg_of(adaptive_softmax_tied_tails=tied), counts)
    cfg = pair.persona.model
    rng = np.random.default_rng(3)
    x = rng.integers(0, V, size=(4, 8))
    y = np.where(rng.random((4, 8)) < 0.5, rng.choice(np.flatnonzero(counts > 60 * 0), size=(4, 8)), x)
    y[0, 0] = int(np.flatnonzero(counts == 0)[0])  # an unseen target: its cluster's path
    # torch: eager model(x, y) vs fused_loss
    m = pair.torch_model
    _, eager = m(torch.from_numpy(x), torch.from_numpy(y))
    g_eager = torch.autograd.grad(eager, list(m.parameters()))
    fused = tfast.fused_loss(m, torch.from_numpy(x), torch.from_numpy(y))
    g_fused = torch.autograd.grad(fused, list(m.parameters()))
    assert abs(eager.item() - fused.item()) < 1e-13
    for a, b in zip(g_eager, g_fused):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-14)
    # ignored targets (-1) drop out of the mean, as in F.nll_loss
    y2 = y.copy()
    y2[1] = -1
    _, e2 = m(torch.from_numpy(x), torch.from_numpy(y2))
    assert abs(e2.item() - tfast.fused_loss(m, torch.from_numpy(x), torch.from_numpy(y2)).item()) < 1e-13
    # JAX: loss_fn (full log-probs) vs fused_loss (through the clusters), values and gradients
    lj, gj = jax.value_and_grad(jm.loss_fn)(pair.params, cfg, jnp.asarray(x), jnp.asarray(y), counts)
    fj, gf = jax.value_and_grad(jfast.fused_loss)(pair.params, cfg, jnp.asarray(x), jnp.asarray(y), token_counts=counts)
    assert abs(float(lj) - float(fj)) < 1e-13 and abs(float(lj) - eager.item()) < 1e-12
    assert checks.tree_error(gf, gj, "float64") < 1e-14


def test_bad_input():
    with pytest.raises(ConfigError, match="adaptive_softmax_cutoffs"):
        cfg_of(adaptive_softmax_cutoffs=(60, 20))
    from torchport.model import GPT

    with pytest.raises(ValueError, match="token_counts"):
        GPT(cfg_of())


def test_untied_tails_parity_float64():
    """The registered ada_lovelace ties its tails (test_parity covers it); the default untied tails, their own
    projections, keep parity too (logits, loss, gradients, optimizer steps, 20-step trajectory), tiny shapes."""
    from dreamteam import registry

    persona = Persona("adaptive_softmax_untied", cfg_of(), registry.get("ada_lovelace").recipe)
    assert not persona.model.adaptive_softmax_tied_tails
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=2, steps=20) if not r.passed]
    assert not failed, failed
