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
from dreamteam.good_turing import probabilities
from jaxmodel import model as jm
from jaxmodel import ngram_memory as jng
from jaxmodel.succession_objective import make_training_loss
from parity import checks
from torchport.fast import fused_loss, linear_cross_entropy
from torchport.model import GPT

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

V = 96
CFG = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=V, components=("ngram_memory",))


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


def test_lookup_by_binary_search_equals_the_dense_row_in_every_framework():
    t = nm.kneser_ney(STATS)
    rng = np.random.default_rng(2)
    v = np.concatenate([rng.choice(stream(), 200), rng.integers(0, V, 100)])
    w = np.concatenate([rng.choice(stream(), 150), rng.integers(0, V, 150)])
    dense = nm.rows(t, v)[np.arange(len(v)), w]
    np.testing.assert_allclose(nm.prob(t, v, w), dense, rtol=0, atol=1e-16)
    mem = GPT(CFG, ngram_stats=STATS).ngram_memory
    vt, wt = torch.from_numpy(v), torch.from_numpy(w)
    torch_rows = mem.rows(vt, torch.float64, "cpu")
    np.testing.assert_allclose(mem.prob(vt, wt, torch.float64, "cpu").numpy(), dense, rtol=0, atol=1e-16)
    np.testing.assert_allclose(torch_rows.numpy(), nm.rows(t, v), rtol=0, atol=1e-16)
    T = jng.tables_of(CFG, STATS, jnp.float64)
    np.testing.assert_allclose(np.asarray(jng.prob(T, jnp.asarray(v), jnp.asarray(w))), dense, rtol=0, atol=1e-16)
    np.testing.assert_allclose(np.asarray(jng.rows(T, jnp.asarray(v))), nm.rows(t, v), rtol=0, atol=1e-16)


def test_uint32_keys_without_x64_find_the_bigrams_of_a_gpt2_sized_vocabulary():
    big_v = 50304  # keys up to V^2 - 1 = 2.53e9: past int32, inside uint32
    ids = np.concatenate([stream(3, 2000) * 523 % big_v, [big_v - 1, big_v - 2, big_v - 1, big_v - 1]])
    stats = nm.bigram_stats(ids, big_v)
    t = nm.kneser_ney(stats)
    v, w = ids[:-1], ids[1:]
    with jax.enable_x64(False):
        T = jng.tables_of(CFG.replace(vocab_size=big_v), stats, jnp.float32)
        assert T["keys"].dtype == jnp.uint32
        got = np.asarray(jng.prob(T, jnp.asarray(v, jnp.int32), jnp.asarray(w, jnp.int32)))
    np.testing.assert_allclose(got, nm.prob(t, v, w), rtol=1e-6)
    assert (nm.prob(t, v, w) > t.alpha[v] * t.p_low[w]).all()  # every seen bigram found its stored mass


def torch_model(bias=None, components=("ngram_memory",)):
    torch.manual_seed(0)
    model = GPT(CFG.replace(components=components), token_counts=STATS.unigram, ngram_stats=STATS).double()
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
    model = torch_model(bias=-float("inf"))
    loss = fused_loss(model, x, y, chunk=5) if fast else model(x, y)[1]
    ngram = -np.log(nm.prob(nm.kneser_ney(STATS), x.numpy().ravel(), y.numpy().ravel())).mean()
    assert loss.item() == pytest.approx(ngram, abs=1e-14)


def test_fused_mixture_loss_and_gradients_equal_the_eager_torch():
    x, y = (torch.from_numpy(a.copy()) for a in batch())  # copies: x and y are views of one array
    y[0, 3] = -1  # an ignored target
    results = []
    for fast in (False, True):
        model = torch_model(bias=0.3, components=("ngram_memory", "good_turing_prior"))
        loss = fused_loss(model, x, y, chunk=5) if fast else model(x, y)[1]
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters()}))
    (eager, g_eager), (fast, g_fast) = results
    assert abs(fast - eager) <= 1e-13
    assert "ngram_memory.gate.weight" in g_fast and "lm_head.bias" in g_fast
    for name in g_eager:
        assert torch.allclose(g_fast[name], g_eager[name], rtol=0, atol=1e-13), name
    assert g_fast["ngram_memory.gate.bias"].abs().item() > 1e-6  # the gate learns


def test_fused_mixture_loss_and_gradients_equal_the_eager_jax():
    cfg = CFG.replace(components=("ngram_memory", "good_turing_prior"))
    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64, token_counts=STATS.unigram)
    assert float(params["params"]["ngram_memory"]["gate"]["bias"][0]) == cfg.ngram_memory_gate_bias
    x, y = (jnp.asarray(a) for a in batch())
    eager = jax.value_and_grad(make_training_loss(cfg, STATS.unigram, fast=False, ngram_stats=STATS))(params, x, y)
    fast = jax.value_and_grad(make_training_loss(cfg, STATS.unigram, fast=True, chunk=5, ngram_stats=STATS))(params, x, y)
    assert abs(float(fast[0]) - float(eager[0])) <= 1e-13
    errors = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fast[1], eager[1])
    assert max(jax.tree.leaves(errors)) <= 1e-13


def test_parity_float64_of_the_component_alone():
    persona = Persona("tiny+ngram_memory", CFG.replace(components=("ngram_memory",), ngram_memory_gate_bias=0.5),
                      Recipe(learning_rate=3e-3))
    results = checks.run_checks(persona, "float64", batch_size=2, steps=5)
    assert {r.check for r in results} >= {"logits", "loss", "gradients", "optimizer_step", "trajectory_5_loss"}
    failed = [(r.check, r.max_error) for r in results if not r.passed]
    assert not failed, failed


def test_configs_and_missing_statistics_are_refused_with_one_clear_error():
    with pytest.raises(ConfigError, match="adaptive_softmax and succession_objective are not supported"):
        GPTConfig(components=("ngram_memory", "succession_objective"))
    with pytest.raises(ConfigError, match="ngram_memory_low"):
        GPTConfig(components=("ngram_memory",), ngram_memory_low="uniform")
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
