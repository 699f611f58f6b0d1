"""good_turing_prior: the Good-Turing estimate (sums to one, unseen ids share N_1 / N, Turing's r* where it is
sound) and the output bias it initializes (with the output weights zero the loss is the unigram cross-entropy),
in both frameworks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from script_helpers import benchmark_script

from dreamteam.components import good_turing_prior as good_turing
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import model as jm
from jaxmodel.fast import fused_loss as jax_fused_loss
from parity import checks
from torchport.fast import fused_loss
from torchport.model import GPT

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

CFG = GPTConfig(components=("good_turing_prior",), vocab_size=500, block_size=16, n_layer=2, n_head=2, n_embd=16)


def zipf_counts(V=500, n=5000, seed=0):
    ids = np.minimum(np.random.default_rng(seed).zipf(1.4, n) - 1, V - 1)
    return np.bincount(ids, minlength=V).astype(np.int64)


COUNTS = [zipf_counts(), zipf_counts(2000, 30000, 1), checks.synthetic_token_counts(GPTConfig())]


@pytest.mark.parametrize("counts", COUNTS, ids=["V500", "V2000", "synthetic-V50304"])
def test_estimate_sums_to_one_and_unseen_ids_share_n1_over_n(counts):
    p = good_turing.probabilities(counts)
    N, n1 = counts.sum(), (counts == 1).sum()
    unseen = counts == 0
    assert unseen.any() and n1 > 0
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[unseen].sum() == pytest.approx(n1 / N, rel=1e-12)
    np.testing.assert_array_equal(p[unseen], p[unseen][0])  # shared equally
    assert (p[~unseen] > 0).all()
    # tokens seen equally often get equal probability, and more often never means less probable
    order = np.argsort(counts[~unseen], kind="stable")
    assert (np.diff(p[~unseen][order]) >= -1e-15).all()


def test_turing_estimate_where_it_is_sound():
    # many singletons and doubletons: r* for r = 1 is Turing's (r + 1) N_{r+1} / N_r, exactly
    counts = zipf_counts(2000, 30000, 1)
    n = np.bincount(counts)
    r_star = good_turing.adjusted_counts(counts)
    assert r_star[1] == pytest.approx(2 * n[2] / n[1], rel=1e-12)
    assert r_star[1] < 1.0  # the singletons give up mass to the unseen ids
    # and large counts are barely changed (the smoothed r* of the fitted power law, close to r)
    r_max = int(counts.max())
    assert abs(r_star[r_max] - r_max) / r_max < 0.05


def test_all_ids_seen_takes_the_whole_mass_and_bad_counts_are_refused():
    p = good_turing.probabilities(np.array([5, 1, 3, 1, 2, 8]))
    assert p.sum() == pytest.approx(1.0, abs=1e-15) and (p > 0).all()
    with pytest.raises(ValueError, match="seen exactly once"):
        good_turing.probabilities(np.array([0, 2, 3, 2]))
    with pytest.raises(ValueError, match="all zero"):
        good_turing.probabilities(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="integer"):
        good_turing.probabilities(np.array([0.5, 1.0]))


def test_models_without_token_counts_refuse_the_component():
    with pytest.raises(ConfigError, match="token_counts"):
        GPT(CFG)
    with pytest.raises(ConfigError, match="token_counts"):
        jm.init_params(CFG, jax.random.PRNGKey(0))


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_with_zero_output_weights_the_loss_is_the_unigram_cross_entropy(framework):
    counts = zipf_counts()
    x, y = np.random.default_rng(2).integers(0, CFG.vocab_size, (2, 3, CFG.block_size))
    expected = good_turing.unigram_cross_entropy(counts, y)
    # directly from the counts too: -mean log p(y) over the batch
    assert expected == pytest.approx(-np.mean(np.log(good_turing.probabilities(counts)[y])), rel=1e-15)
    if framework == "torch":
        torch.manual_seed(0)
        model = GPT(CFG, token_counts=counts).double()
        # built in float32 (torch's default dtype), then cast: log p rounded to float32
        np.testing.assert_allclose(model.lm_head.bias.detach().numpy(), good_turing.log_prior(counts), rtol=1e-7, atol=0)
        with torch.no_grad():
            model.lm_head.weight.zero_()  # the tied head (and so the token embedding)
        eager = model(torch.from_numpy(x), torch.from_numpy(y))[1].item()
        fast = fused_loss(model, torch.from_numpy(x), torch.from_numpy(y)).item()
    else:
        params = jm.init_params(CFG, jax.random.PRNGKey(0), jnp.float64, token_counts=counts)
        np.testing.assert_allclose(params["params"]["lm_head"]["bias"], good_turing.log_prior(counts), rtol=0, atol=1e-15)
        params["params"]["transformer"]["wte"]["weight"] = jnp.zeros_like(params["params"]["transformer"]["wte"]["weight"])
        eager = float(jm.loss_fn(params, CFG, x, y))
        fast = float(jax_fused_loss(params, CFG, x, y))
    assert eager == pytest.approx(expected, abs=1e-6)
    assert fast == pytest.approx(expected, abs=1e-6)
    assert abs(expected - np.log(CFG.vocab_size)) > 0.5  # not the uniform start


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_bias_is_trained(framework):
    counts = zipf_counts()
    x, y = np.random.default_rng(3).integers(0, CFG.vocab_size, (2, 2, CFG.block_size))
    if framework == "torch":
        model = GPT(CFG, token_counts=counts).double()
        fused_loss(model, torch.from_numpy(x), torch.from_numpy(y)).backward()
        g = model.lm_head.bias.grad.numpy()
    else:
        params = jm.init_params(CFG, jax.random.PRNGKey(0), jnp.float64, token_counts=counts)
        g = np.asarray(jax.grad(jax_fused_loss)(params, CFG, x, y)["params"]["lm_head"]["bias"])
    assert np.abs(g).max() > 1e-3 and abs(g.sum()) < 1e-12  # softmax gradients sum to zero over the vocabulary


@pytest.mark.parametrize("components", [("good_turing_prior",), ("good_turing_prior", "muon")])
def test_output_bias_lr_ratio_scales_only_the_bias_step_in_both_frameworks(components):
    """good_turing_prior_lr_ratio r: the bias's AdamW step is r times the step at r = 1 (Adam's first step is
    lr * g / (|g| + eps), linear in lr), every other parameter's step is unchanged, and r = 0 keeps the prior."""
    from dreamteam.config import Persona, Recipe
    from jaxmodel import recipe as jr
    from parity.convert import _flatten, flax_key_to_torch
    from torchport import recipe as tr

    cfg = CFG.replace(components=components)
    base = Recipe(learning_rate=3e-3, schedule="cosine", warmup_iters=2, min_lr=3e-4, weight_decay=0.01)
    x, y = checks.fixed_batches(cfg, 1, 2)[0]

    def torch_steps(ratio, steps=1):
        pair = checks.Pair.make(Persona("t", cfg, base.replace(good_turing_prior_lr_ratio=ratio)), "float64")
        start = {k: v.clone() for k, v in pair.torch_model.state_dict().items()}
        opt = tr.build_optimizer(pair.torch_model, pair.persona.recipe)
        for it in range(steps):
            pair.torch_model(torch.from_numpy(x), torch.from_numpy(y))[1].backward()
            tr.optimizer_step(pair.torch_model, opt, pair.persona.recipe, it)
        return {k: (v - start[k]).numpy() for k, v in pair.torch_model.state_dict().items()}

    def jax_step(ratio):
        persona = Persona("t", cfg, base.replace(good_turing_prior_lr_ratio=ratio))
        pair = checks.Pair.make(persona, "float64")
        opt = jr.build_optimizer(persona.recipe, 4, cfg)
        grads = jax.grad(jm.loss_fn)(pair.params, cfg, x, y, pair.token_counts)
        updates, _ = opt.update(grads, opt.init(pair.params), pair.params)
        return {flax_key_to_torch(k): np.asarray(v) for k, v in _flatten(updates["params"])}

    for step in (torch_steps, jax_step):
        full, quarter = step(1.0), step(0.25)
        # steps of ~1e-3 taken from biases of ~10 (log-probabilities): the differences are exact to ~1e-15
        np.testing.assert_allclose(quarter["lm_head.bias"], 0.25 * full["lm_head.bias"], rtol=1e-9, atol=1e-14)
        assert np.abs(full["lm_head.bias"]).max() > 1e-4  # the bias does move at r = 1
        for k in full:
            if k not in ("lm_head.bias", "lm_head.weight"):
                np.testing.assert_array_equal(quarter[k], full[k])
    frozen = torch_steps(0.0, steps=3)
    np.testing.assert_array_equal(frozen["lm_head.bias"], 0.0)
    assert np.abs(frozen["transformer.wte.weight"]).max() > 0


@pytest.mark.parametrize("components", [("good_turing_prior",), ("good_turing_prior", "muon")])
def test_parity_with_a_slower_output_bias(components):
    from dreamteam.config import Persona, Recipe

    recipe = Recipe(learning_rate=3e-3, schedule="cosine", warmup_iters=2, min_lr=3e-4, weight_decay=0.01,
                    good_turing_prior_lr_ratio=0.1)
    results = checks.run_checks(Persona("t", CFG.replace(components=components), recipe), "float64", batch_size=2, steps=5)
    failed = [(r.check, r.max_error) for r in results if not r.passed]
    assert not failed, failed


def test_negative_output_bias_lr_ratio_is_a_config_error():
    from dreamteam.config import Recipe

    with pytest.raises(ConfigError, match="good_turing_prior_lr_ratio"):
        Recipe(good_turing_prior_lr_ratio=-0.1)


def test_output_bias_drift_table_reads_back_known_shifts(tmp_path, capsys):
    """benchmarks/output_bias_drift.py: a bias equal to the prior plus a known shift per frequency group gives
    those shifts back, and a checkpoint without the bias is one clear error."""
    from safetensors.numpy import save_file

    drift = benchmark_script("output_bias_drift")
    counts = zipf_counts(V=500, n=3000)
    assert (counts == 0).any() and (counts == 1).any() and (counts >= 100).any()
    shift = np.select([counts == 0, counts == 1, counts < 10, counts < 100], [-3.0, -2.0, -1.0, 0.5], 0.25)
    rows = drift.drift_table(good_turing.log_prior(counts) + shift, counts, counts)
    assert [r["group"] for r in rows] == [g[0] for g in drift.GROUPS]
    for r, expected in zip(rows, [-3.0, -2.0, -1.0, 0.5, 0.25]):
        assert r["mean"] == pytest.approx(expected, abs=1e-12) and r["min"] == pytest.approx(expected, abs=1e-12)
    assert sum(r["ids"] for r in rows) == 500 and sum(r["val_tokens"] for r in rows) == counts.sum()
    save_file({"transformer.wte.weight": np.zeros((4, 2), np.float32)}, str(tmp_path / "m.safetensors"))
    assert drift.main([str(tmp_path / "m.safetensors")]) == 2
    assert "no lm_head.bias" in capsys.readouterr().err
