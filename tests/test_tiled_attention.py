"""tiled_attention: the online softmax by key blocks equals the naive causal softmax, in both frameworks;
the JAX version's memory grows linearly in T (compiled temp bytes)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamteam import registry
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import model as jm
from jaxmodel import tiled_attention as jt
from parity import checks
from torchport import tiled_attention as tt
import train_mps

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


def qkv(T, E=8, F_=6, B=2, H=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, H, T, E)) * 2, rng.normal(size=(B, H, T, E)) * 2, rng.normal(size=(B, H, T, F_))


@pytest.mark.parametrize("T,block", [(37, 1), (37, 5), (37, 16), (37, 64), (64, 16), (64, 7), (48, 48)])
def test_tiled_equals_naive_float64(T, block):
    q, k, v = qkv(T)
    ref = np.asarray(jt.naive_attention(*map(jnp.asarray, (q, k, v))))
    got_j = np.asarray(jt.tiled_attention(*map(jnp.asarray, (q, k, v)), block=block))
    got_t = tt.tiled_attention(*map(torch.from_numpy, (q, k, v)), block=block).numpy()
    ref_t = tt.naive_attention(*map(torch.from_numpy, (q, k, v))).numpy()
    np.testing.assert_allclose(got_j, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_t, ref_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ref_t, ref, rtol=0, atol=1e-12)


def test_torch_model_path_sdpa_equals_tiled_reference():
    q, k, v = (torch.from_numpy(a) for a in qkv(40, F_=8))  # sdpa wants equal key and value widths
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(sdpa.numpy(), tt.tiled_attention(q, k, v, block=16).numpy(), rtol=0, atol=1e-12)


def test_tiled_gradients_equal_naive():
    q, k, v = map(jnp.asarray, qkv(21))
    f_tiled = lambda q, k, v: jnp.sum(jnp.sin(jt.tiled_attention(q, k, v, block=4)))  # noqa: E731
    f_naive = lambda q, k, v: jnp.sum(jnp.sin(jt.naive_attention(q, k, v)))  # noqa: E731
    for a, b in zip(jax.grad(f_tiled, (0, 1, 2))(q, k, v), jax.grad(f_naive, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
        assert np.all(np.isfinite(np.asarray(a)))


def test_tiled_softmax_is_stable_for_large_scores():
    q, k, v = qkv(30)
    q, k = q * 40, k * 40  # scores in the thousands: exp would overflow without the running maximum
    got = np.asarray(jt.tiled_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), block=8))
    ref = np.asarray(jt.naive_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def temp_bytes(fn, T, E=16):
    x = jax.ShapeDtypeStruct((1, 1, T, E), jnp.float32)
    return jax.jit(fn).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def test_jax_tiled_memory_grows_linearly_in_T():
    """XLA's compiled temporary buffer sizes: doubling T doubles the tiled version's (T x block scores),
    quadruples the naive one's (T x T)."""
    tiled = [temp_bytes(lambda q, k, v: jt.tiled_attention(q, k, v, block=16), T) for T in (256, 512, 1024)]
    naive = [temp_bytes(jt.naive_attention, T) for T in (256, 512, 1024)]
    for a, b in zip(tiled, tiled[1:]):
        assert 1.5 < b / a < 2.5, tiled
    for a, b in zip(naive, naive[1:]):
        assert b / a > 3.5, naive
    assert tiled[-1] < naive[-1] / 10


def test_model_with_tiled_attention_sows_the_naive_weights_for_anatomy():
    cfg = GPTConfig(vocab_size=64, block_size=20, n_layer=2, n_head=2, n_embd=8, components=("tiled_attention",))
    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64)
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 20)))
    logits_tiled, state = jm.GPT(cfg).apply(params, idx, mutable=["intermediates"])
    logits_naive, state_n = jm.GPT(cfg.replace(components=())).apply(params, idx, mutable=["intermediates"])
    np.testing.assert_allclose(np.asarray(logits_tiled), np.asarray(logits_naive), rtol=0, atol=1e-12)
    w = state["intermediates"]["transformer"]["h_1"]["attn"]["attention_weights"][0]
    w_n = state_n["intermediates"]["transformer"]["h_1"]["attn"]["attention_weights"][0]
    np.testing.assert_allclose(np.asarray(w), np.asarray(w_n), rtol=0, atol=1e-15)


def test_baseline_plus_tiled_attention_builds_and_rejects_a_bad_block():
    assert registry.build("baseline", add=("tiled_attention",)).model.has("tiled_attention")
    with pytest.raises(ConfigError, match="tiled_attention_block"):
        GPTConfig(components=("tiled_attention",), tiled_attention_block=0)
    with pytest.raises(ValueError, match="block"):
        jt.tiled_attention(*map(jnp.asarray, qkv(4)), block=0)


def test_mla_with_tiled_attention_matches_naive():
    persona = registry.build("leonardo_da_vinci", add=("tiled_attention",))
    cfg = persona.model.replace(vocab_size=128, block_size=24, n_layer=1, n_embd=16, n_head=2)
    params = jm.init_params(cfg, jax.random.PRNGKey(1), jnp.float64)
    idx = jnp.asarray(np.random.default_rng(2).integers(0, 128, size=(2, 24)))
    a = jm.GPT(cfg).apply(params, idx)
    b = jm.GPT(cfg.replace(components=tuple(c for c in cfg.components if c != "tiled_attention"))).apply(params, idx)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
    assert checks.array_error(a, b, "float64") <= 1e-12


def test_torch_training_without_tiled_attention_is_the_same_computation(short_val_data, tmp_path):
    """In torch, tiled_attention trains through scaled_dot_product_attention, the kernel that plain attention
    already calls (the tiled loop is the reference parity checks against), so charles_babbage without it is
    the same computation: the same losses bit for bit. Its ablation row is therefore the persona's own run."""
    records = []
    for label in ("charles_babbage", "charles_babbage-tiled_attention"):
        out = tmp_path / label
        train_mps.train(registry.from_label(label), seed=3, data_dir=short_val_data, device_override="cpu",
                        max_iters_override=30, out_dir=out, progress=False)
        (path,) = out.glob("*.json")
        records.append(json.loads(path.read_text()))
    with_tiled, without = records
    assert "tiled_attention" not in without["config"]["components"]
    assert with_tiled["vloss_curve"] == without["vloss_curve"]
    assert with_tiled["val_loss"] == without["val_loss"]
