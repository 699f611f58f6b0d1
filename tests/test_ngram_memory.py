"""ngram_memory: the Kneser-Ney bigram of train.bin and the gated mixture, from their own mathematics
(dreamteam/components/ngram_memory.py), in numpy, torch and JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamteam.components import conflicts
from dreamteam.components import ngram_memory as nm
from dreamteam.config import ConfigError, GPTConfig, Persona, Recipe
from dreamteam.components.good_turing_prior import probabilities
from jaxmodel import model as jm
from jaxmodel import ngram_memory as jng
from jaxmodel.succession_objective import make_training_loss
from parity import checks
from torchport.fast import fused_loss, linear_cross_entropy
from torchport.model import GPT

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

V = 96
CFG = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=V, components=("ngram_memory",),
                ngram_memory_order=2)


def stream(seed=0, n=3000):
    """Zipf ids: many unseen, so some contexts have no row of their own."""
    return np.minimum(np.random.default_rng(seed).zipf(1.3, size=n) - 1, V - 1)


STATS = nm.bigram_stats(stream(), V)
# a hand-made corpus over 5 ids: bigrams (0,1) x3, (1,2) x2, (2,0), (1,3), (3,0), (2,4) once each; 4 ends it
CORPUS = np.array([0, 1, 2, 0, 1, 3, 0, 1, 2, 4])


def batch(seed=1, B=3):
    ids = np.random.default_rng(seed).integers(0, V, size=(B, CFG.block_size + 1))
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("low", nm.LOW_ORDERS)
def test_kneser_ney_equals_the_hand_computed_estimate(low):
    stats = nm.bigram_stats(CORPUS, 5)
    t = nm.kneser_ney(stats, low)
    d = 4 / (4 + 2 * 1)  # n1 = 4 bigrams seen once, n2 = 1 seen twice
    assert t.discount == pytest.approx(d, abs=1e-15)
    p_gt = probabilities(np.array([3, 3, 2, 1, 1]))
    if low == "gt":
        p_low = p_gt
    else:  # continuation counts N1+(. w) = 2, 1, 1, 1, 1 over 6 bigram types; d1 = 4 / (4 + 2), T1 = 5
        d1 = 2 / 3
        p_low = np.maximum(np.array([2, 1, 1, 1, 1]) - d1, 0) / 6 + d1 * 5 / 6 * p_gt
        assert t.low_discount == pytest.approx(d1, abs=1e-15)
    np.testing.assert_allclose(t.p_low, p_low, rtol=0, atol=1e-15)
    # alpha(v) = d N1+(v .) / c(v): c = 3, 3, 2, 1 and N1+ = 1, 2, 2, 1; id 4 is never a context
    np.testing.assert_allclose(t.alpha, [d / 3, 2 * d / 3, d, d, 1.0], rtol=0, atol=1e-15)
    expected = {(0, 1): (3 - d) / 3 + d / 3 * p_low[1], (1, 2): (2 - d) / 3 + 2 * d / 3 * p_low[2],
                (1, 0): 2 * d / 3 * p_low[0], (2, 4): (1 - d) / 2 + d * p_low[4], (4, 3): p_low[3],
                (3, 0): (1 - d) + d * p_low[0]}
    for (v, w), p in expected.items():
        assert nm.prob(t, v, w) == pytest.approx(p, abs=1e-15), (v, w)
        assert nm.rows(t, [v])[0, w] == pytest.approx(p, abs=1e-15), (v, w)


def test_kneser_ney_trigram_equals_the_hand_computed_estimate():
    t3 = nm.kneser_ney_trigram(nm.bigram_stats(CORPUS, 5), "gt")
    # trigrams: (0,1,2) x2; (1,2,0), (2,0,1), (0,1,3), (1,3,0), (3,0,1), (1,2,4) once: d3 = 6 / (6 + 2)
    assert t3.discount == pytest.approx(3 / 4, abs=1e-15)
    p_low = probabilities(np.array([3, 3, 2, 1, 1]))
    # middle order from continuation counts N1+(. v w): (0,1) 2, (1,2) (1,3) (2,0) (2,4) (3,0) 1: d2 = 5 / 7;
    # context 1 has 2 entries of total 2: p_mid(2 | 1) = (1 - 5/7) / 2 + 5/7 p_low(2)
    p_mid = 1 / 7 + 5 / 7 * p_low[2]
    # context (0, 1): c = 3, N1+ = 2, alpha = 3/4 * 2/3
    assert nm.prob3(t3, 0, 1, 2) == pytest.approx((2 - 3 / 4) / 3 + 1 / 2 * p_mid, abs=1e-15)
    assert nm.prob3(t3, 4, 1, 2) == pytest.approx(p_mid, abs=1e-15)  # context (4, 1) never seen: the middle order
    assert nm.prob3(t3, -1, 1, 2) == nm.prob(nm.kneser_ney(nm.bigram_stats(CORPUS, 5)), 1, 2)  # no u: the bigram
    r = nm.rows3(t3, [0, 4, -1, 1], [1, 1, 1, 2])
    np.testing.assert_allclose(r.sum(1), 1.0, rtol=0, atol=1e-15)
    assert r[0, 2] == nm.prob3(t3, 0, 1, 2)


@pytest.mark.parametrize("low", nm.LOW_ORDERS)
def test_every_row_sums_to_one_for_seen_and_unseen_contexts(low):
    t = nm.kneser_ney(STATS, low)
    seen = np.flatnonzero(t.alpha < 1)
    unseen = np.flatnonzero(STATS.unigram == 0)
    assert len(seen) and len(unseen)
    contexts = np.concatenate([seen[:5], [seen[np.argmax(np.diff(t.row_ptr)[seen])]], unseen[:3], [stream()[-1]]])
    r = nm.rows(t, contexts)
    assert (r > 0).all()  # every id keeps mass: the lowest order covers the vocabulary
    np.testing.assert_allclose(r.sum(1), 1.0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(nm.rows(t, unseen[:1])[0], t.p_low, rtol=0, atol=0)  # no row: the lowest order
    t3 = nm.kneser_ney_trigram(STATS, low)
    ids = stream()
    u = np.concatenate([ids[:6], [-1, -1, unseen[0], unseen[0], ids[-2]]])  # seen, no u, unseen contexts
    v = np.concatenate([ids[1:7], [ids[0], unseen[0], unseen[0], ids[0], ids[-1]]])
    r3 = nm.rows3(t3, u, v)
    assert (r3 > 0).all()
    np.testing.assert_allclose(r3.sum(1), 1.0, rtol=0, atol=1e-13)


@pytest.mark.parametrize("order", [2, 3])
def test_lookup_by_binary_search_equals_the_dense_row_in_every_framework(order):
    cfg = CFG.replace(ngram_memory_order=order)
    rng = np.random.default_rng(2)
    ids = stream()
    at = rng.integers(1, len(ids) - 1, 200)  # contexts of the stream (seen trigram contexts), then random ones
    u = np.concatenate([ids[at - 1], [-1] * 20, rng.integers(0, V, 80)])
    v = np.concatenate([ids[at], rng.integers(0, V, 100)])
    w = np.concatenate([ids[at + 1][:150], rng.integers(0, V, 150)])
    if order == 2:
        t = nm.kneser_ney(STATS)
        dense_NxV, lookup = nm.rows(t, v), nm.prob(t, v, w)
    else:
        t = nm.kneser_ney_trigram(STATS)
        dense_NxV, lookup = nm.rows3(t, u, v), nm.prob3(t, u, v, w)
    dense = dense_NxV[np.arange(len(v)), w]
    np.testing.assert_allclose(lookup, dense, rtol=0, atol=1e-16)
    mem = GPT(cfg, ngram_stats=STATS).ngram_memory
    ut, vt, wt = (torch.from_numpy(a) for a in (u, v, w))
    np.testing.assert_allclose(mem.prob(ut, vt, wt, torch.float64, "cpu").numpy(), dense, rtol=0, atol=1e-16)
    np.testing.assert_allclose(mem.rows(ut, vt, torch.float64, "cpu").numpy(), dense_NxV, rtol=0, atol=1e-16)
    T = jng.tables_of(cfg, STATS, jnp.float64)
    uj, vj, wj = (jnp.asarray(a) for a in (u, v, w))
    np.testing.assert_allclose(np.asarray(jng.prob(T, uj, vj, wj)), dense, rtol=0, atol=1e-16)
    np.testing.assert_allclose(np.asarray(jng.rows(T, uj, vj)), dense_NxV, rtol=0, atol=1e-16)


def test_uint32_keys_without_x64_find_the_bigrams_of_a_gpt2_sized_vocabulary():
    big_v = 50304  # keys up to V^2 - 1 = 2.53e9: past int32, inside uint32
    ids = np.concatenate([stream(3, 2000) * 523 % big_v, [big_v - 1, big_v - 2, big_v - 1, big_v - 1]])
    stats = nm.bigram_stats(ids, big_v)
    t = nm.kneser_ney(stats)
    u, v, w = np.concatenate([[-1], ids[:-2]]), ids[:-1], ids[1:]
    t3 = nm.kneser_ney_trigram(stats)
    with jax.enable_x64(False):
        T = jng.tables_of(CFG.replace(vocab_size=big_v, ngram_memory_order=2), stats, jnp.float32)
        assert T["bigram"]["keys"].dtype == jnp.uint32
        got = np.asarray(jng.prob(T, *(jnp.asarray(a, jnp.int32) for a in (u, v, w))))
        T3 = jng.tables_of(CFG.replace(vocab_size=big_v, ngram_memory_order=3), stats, jnp.float32)
        got3 = np.asarray(jng.prob(T3, *(jnp.asarray(a, jnp.int32) for a in (u, v, w))))
    np.testing.assert_allclose(got, nm.prob(t, v, w), rtol=1e-6)
    assert (nm.prob(t, v, w) > t.alpha[v] * t.p_low[w]).all()  # every seen bigram found its stored mass
    np.testing.assert_allclose(got3, nm.prob3(t3, u, v, w), rtol=1e-6)
    assert t3.ctx_keys.max() > 2**31  # context keys u V + v past int32: compared as uint32


def torch_model(bias=None, components=("ngram_memory",), order=2):
    torch.manual_seed(0)
    cfg = CFG.replace(components=components, ngram_memory_order=order)
    model = GPT(cfg, token_counts=STATS.unigram, ngram_stats=STATS).double()
    if bias is not None:
        with torch.no_grad():
            model.ngram_memory.gate.bias.fill_(bias)
    return model


def test_the_mixture_is_a_distribution_over_the_vocabulary():
    x, _ = batch()
    logp = torch_model(bias=0.7)(torch.from_numpy(x))[0]
    assert logp.shape == (3, 1, V)
    np.testing.assert_allclose(logp.exp().sum(-1).detach().numpy(), 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("fast", [False, True])
def test_gate_at_one_gives_the_models_own_loss_and_at_zero_the_ngrams(fast):
    x, y = (torch.from_numpy(a) for a in batch())
    model = torch_model(bias=float("inf"))
    loss = fused_loss(model, x, y, chunk=5) if fast else model(x, y)[1]
    h = model.hidden(x)
    own = (linear_cross_entropy(h.reshape(-1, 8), model.lm_head.weight, y.reshape(-1), 5) if fast else
           F.cross_entropy(model.lm_head(h).reshape(-1, V), y.reshape(-1)))
    assert loss.item() == own.item()
    loss.backward()
    assert model.ngram_memory.gate.weight.grad.abs().max() == 0  # g - r = 1 - 1
    # in evaluation the memory's full estimate; in training the held-out one (each target's occurrence out)
    u = np.pad(x.numpy()[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    v, t = x.numpy().ravel(), y.numpy().ravel()
    for order, prob, held in ((2, lambda T: nm.prob(T, v, t), lambda T: nm.prob_held_out(T, v, t)),
                              (3, lambda T: nm.prob3(T, u.ravel(), v, t), lambda T: nm.prob3_held_out(T, u.ravel(), v, t))):
        tables = nm.kneser_ney(STATS) if order == 2 else nm.kneser_ney_trigram(STATS)  # trigram: the two tokens before
        model = torch_model(bias=-float("inf"), order=order)
        for training, estimate in ((False, prob), (True, held)):
            model.train(training)
            loss = fused_loss(model, x, y, chunk=5) if fast else model(x, y)[1]
            assert loss.item() == pytest.approx(-np.log(estimate(tables)).mean(), abs=1e-14)
        assert not np.allclose(prob(tables), held(tables))  # the batch holds events the counts hold


@pytest.mark.parametrize("order", [2, 3])
def test_fused_mixture_loss_and_gradients_equal_the_eager_torch(order):
    x, y = (torch.from_numpy(a.copy()) for a in batch())  # copies: x and y are views of one array
    y[0, 3] = -1  # an ignored target
    results = []
    for fast in (False, True):
        model = torch_model(bias=0.3, components=("ngram_memory", "good_turing_prior"), order=order)
        loss = fused_loss(model, x, y, chunk=5) if fast else model(x, y)[1]
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters()}))
    (eager, g_eager), (fast, g_fast) = results
    assert abs(fast - eager) <= 1e-13
    assert "ngram_memory.gate.weight" in g_fast and "lm_head.bias" in g_fast
    for name in g_eager:
        assert torch.allclose(g_fast[name], g_eager[name], rtol=0, atol=1e-13), name
    assert g_fast["ngram_memory.gate.bias"].abs().item() > 1e-6  # the gate learns


@pytest.mark.parametrize("order, detach", [(2, False), (3, False), (3, True)])
def test_fused_mixture_loss_and_gradients_equal_the_eager_jax(order, detach):
    cfg = CFG.replace(components=("ngram_memory", "good_turing_prior"), ngram_memory_order=order,
                      ngram_memory_detach=detach)
    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64, token_counts=STATS.unigram)
    assert float(params["params"]["ngram_memory"]["gate"]["bias"][0]) == cfg.ngram_memory_gate_bias
    x, y = (jnp.asarray(a) for a in batch())
    eager = jax.value_and_grad(make_training_loss(cfg, STATS.unigram, fast=False, ngram_stats=STATS))(params, x, y)
    fast = jax.value_and_grad(make_training_loss(cfg, STATS.unigram, fast=True, chunk=5, ngram_stats=STATS))(params, x, y)
    assert abs(float(fast[0]) - float(eager[0])) <= 1e-13
    errors = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fast[1], eager[1])
    assert max(jax.tree.leaves(errors)) <= 1e-13


@pytest.mark.parametrize("order, detach", [(2, False), (3, False), (3, True)])
def test_parity_float64_of_the_component_alone(order, detach):
    persona = Persona("tiny+ngram_memory", CFG.replace(components=("ngram_memory",), ngram_memory_gate_bias=0.5,
                                                       ngram_memory_order=order, ngram_memory_detach=detach),
                      Recipe(learning_rate=3e-3))
    results = checks.run_checks(persona, "float64", batch_size=2, steps=5)
    assert {r.check for r in results} >= {"logits", "loss", "gradients", "optimizer_step", "trajectory_5_loss"}
    failed = [(r.check, r.max_error) for r in results if not r.passed]
    assert not failed, failed


def test_configs_and_missing_statistics_are_refused_with_one_clear_error():
    with pytest.raises(ConfigError, match="ngram_memory.*objective"):
        GPTConfig(components=("ngram_memory", "succession_objective"))
    with pytest.raises(ConfigError, match="ngram_memory_low"):
        GPTConfig(components=("ngram_memory",), ngram_memory_low="uniform")
    with pytest.raises(ConfigError, match="ngram_memory_order"):
        GPTConfig(components=("ngram_memory",), ngram_memory_order=4)
    assert conflicts(("ngram_memory", "adaptive_softmax"))  # the declaration says so too
    assert not conflicts(("ngram_memory", "muon", "memory_tape", "good_turing_prior"))
    with pytest.raises(ValueError, match="needs the bigram counts of train.bin"):
        GPT(CFG)
    with pytest.raises(ValueError, match="at least 2 ids"):
        nm.bigram_stats(np.array([3]), V)


def test_train_mps_runs_the_component_from_a_label(short_val_data, tmp_path):
    import json

    import train_mps

    assert train_mps.main(["--persona", "baseline+ngram_memory", "--max-iters", "2", "--device", "cpu", "--threads", "1",
                           "--data-dir", str(short_val_data), "--out-dir", str(tmp_path), "--no-progress"]) == 0
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["persona"] == "baseline+ngram_memory" and rec["config"]["components"] == ["ngram_memory"]
    # at initialization the model is nearly uniform: the mixture's loss is the bigram's plus about log 2, far
    # below the uniform model's log(50304) = 10.83
    assert rec["vloss_curve"][0][1] < 7.0


@pytest.mark.parametrize("fast", [False, True])
def test_detach_keeps_the_loss_and_gives_the_head_its_own_cross_entropy_gradient(fast):
    x, y = (torch.from_numpy(a) for a in batch())
    losses, grads = [], []
    for detach in (False, True):
        torch.manual_seed(0)
        cfg = CFG.replace(ngram_memory_order=3, ngram_memory_detach=detach)
        model = GPT(cfg, token_counts=STATS.unigram, ngram_stats=STATS).double()
        with torch.no_grad():
            model.ngram_memory.gate.weight.zero_()  # the gate reaches no hidden state: the model's grads are the head's
        loss = fused_loss(model, x, y, chunk=5) if fast else model(x, y)[1]
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], abs=1e-15)  # the same -log p_mix
    assert grads[1]["ngram_memory.gate.bias"].item() == pytest.approx(grads[0]["ngram_memory.gate.bias"].item(), abs=1e-15)
    model.zero_grad()
    F.cross_entropy(model.lm_head(model.hidden(x)).reshape(-1, V), y.reshape(-1)).backward()
    for name, p in model.named_parameters():
        if not name.startswith("ngram_memory"):
            assert torch.allclose(grads[1][name], p.grad, rtol=0, atol=1e-15), name
            assert not torch.allclose(grads[0][name], p.grad, rtol=0, atol=1e-6), name  # joint: scaled by r


def _without(keys, counts, key):
    """The sorted keys and counts with one occurrence of `key` taken away (and the key gone where it was its last)."""
    k = np.searchsorted(keys, key)
    assert keys[k] == key
    counts = counts.copy()
    counts[k] -= 1
    return keys[counts > 0], counts[counts > 0]


@pytest.mark.parametrize("low", nm.LOW_ORDERS)
def test_held_out_estimate_is_kneser_ney_of_the_counts_without_the_occurrence(low):
    """Each training position's rows equal the interpolated Kneser-Ney estimate rebuilt from the counts with that
    one occurrence removed (discounts and lowest order kept): the bigram's c(v, t), and for the trigram c(u v t)
    and, where it was the trigram's only occurrence, the middle order's continuation count N1+(. v t)."""
    ids = stream()
    t2, t3 = nm.kneser_ney(STATS, low), nm.kneser_ney_trigram(STATS, low)
    checked_single = 0
    for i in range(1, 600, 7):
        u, v, t = ids[i - 1], ids[i], ids[i + 1]
        keys, counts = _without(STATS.keys, STATS.counts, v * V + t)
        rebuilt = nm._interpolated(V, keys, counts, t2.p_low, 0.0, t2.discount)
        np.testing.assert_allclose(nm.rows_held_out(t2, [v], [t]), nm.rows(rebuilt, [v]), rtol=0, atol=1e-15)
        keys3, counts3 = _without(STATS.trigram_keys, STATS.trigram_counts, (u * V + v) * V + t)
        rebuilt3 = nm.kneser_ney_trigram(nm.BigramStats(V, STATS.keys, STATS.counts, STATS.unigram, keys3, counts3),
                                         p_low=t3.middle.p_low,
                                         discounts=(t3.bigram.discount, t3.middle.discount, t3.discount))
        np.testing.assert_allclose(nm.rows3_held_out(t3, [u], [v], [t]), nm.rows3(rebuilt3, [u], [v]), rtol=0, atol=1e-15)
        checked_single += nm.count3(t3, u, v, t) == 1
    assert checked_single >= 10  # trigrams seen once, whose middle-order count moves too, were among them


@pytest.mark.parametrize("order", [2, 3])
def test_held_out_rows_are_distributions_and_equal_their_lookup_in_every_framework(order):
    """Every held-out row sums to one and its target entry is the held-out lookup, in numpy, torch and JAX (float64);
    a target the counts do not hold (not a train.bin occurrence) keeps the full estimate."""
    ids = stream()
    n = 300
    u, v, t = np.concatenate([[-1], ids[:n - 1]]), ids[:n].copy(), ids[1:n + 1].copy()
    u[::9] = -1  # a window's first position: the bigram's estimate
    t[5::13] = np.random.default_rng(3).integers(0, V, size=len(t[5::13]))  # events perhaps never seen
    if order == 2:
        T = nm.kneser_ney(STATS)
        rows, lookup, k = nm.rows_held_out(T, v, t), nm.prob_held_out(T, v, t), nm.count(T, v, t)
        full_rows, full = nm.rows(T, v), nm.prob(T, v, t)
    else:
        T = nm.kneser_ney_trigram(STATS)
        rows, lookup = nm.rows3_held_out(T, u, v, t), nm.prob3_held_out(T, u, v, t)
        k = np.where(u >= 0, nm.count3(T, u, v, t), nm.count(T.bigram, v, t))
        full_rows, full = nm.rows3(T, u, v), nm.prob3(T, u, v, t)
    np.testing.assert_allclose(rows.sum(1), 1.0, rtol=0, atol=1e-14)
    assert rows.min() > 0
    np.testing.assert_allclose(rows[np.arange(n), t], lookup, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(lookup[k == 0], full[k == 0])
    np.testing.assert_array_equal(rows[k == 0], full_rows[k == 0])
    assert (lookup[k >= 1] < full[k >= 1]).all()  # an event loses its own evidence
    cfg = CFG.replace(ngram_memory_order=order)
    memory = GPT(cfg, token_counts=STATS.unigram, ngram_stats=STATS).ngram_memory
    ut, vt, tt = (torch.from_numpy(a) for a in (u, v, t))
    np.testing.assert_allclose(memory.prob(ut, vt, tt, torch.float64, "cpu", held_out=True).numpy(), lookup, rtol=0, atol=1e-15)
    np.testing.assert_allclose(memory.rows(ut, vt, torch.float64, "cpu", tt).numpy(), rows, rtol=0, atol=1e-15)
    J = jng.tables_of(cfg, STATS, jnp.float64)
    uj, vj, tj = (jnp.asarray(a) for a in (u, v, t))
    np.testing.assert_allclose(np.asarray(jng.prob(J, uj, vj, tj, held_out=True)), lookup, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(jng.rows(J, uj, vj, tj)), rows, rtol=0, atol=1e-15)


def test_jax_trains_on_the_held_out_estimate_and_evaluates_on_the_full_one():
    """With the gate shut (b_g = -inf) the JAX training loss is the memory's held-out cross-entropy and the
    evaluation loss (loss_fn) its full one, eager and fused alike."""
    cfg = CFG.replace(ngram_memory_order=3, ngram_memory_gate_bias=-float("inf"))
    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64)
    ids = stream(seed=0)
    x, y = ids[:2 * 8].reshape(2, 8), ids[1:2 * 8 + 1].reshape(2, 8)  # windows of the counted stream
    u = np.pad(x[:, :-1], ((0, 0), (1, 0)), constant_values=-1).ravel()
    T = nm.kneser_ney_trigram(STATS)
    held = -np.log(nm.prob3_held_out(T, u, x.ravel(), y.ravel())).mean()
    full = -np.log(nm.prob3(T, u, x.ravel(), y.ravel())).mean()
    assert held > full + 0.1  # the counted stream's own events are what the held-out estimate removes
    for fast in (False, True):
        train = make_training_loss(cfg, fast=fast, chunk=5, ngram_stats=STATS)(params, jnp.asarray(x), jnp.asarray(y))
        assert float(train) == pytest.approx(held, abs=1e-13)
    assert float(jm.loss_fn(params, cfg, jnp.asarray(x), jnp.asarray(y), ngram_stats=STATS)) == pytest.approx(full, abs=1e-13)
