"""memory_tape: with M = 0 plain causal attention, causality of the context part, one softmax over tape and
context, gradients reach the tape; both frameworks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import model as jm
from parity.convert import flax_to_torch
from torchport import model as tm
from torchport.memory_tape import tape_attention, tape_attention_weights

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

SMALL = dict(vocab_size=97, block_size=12, n_layer=2, n_head=2, n_embd=16)


def attn_pair(cfg, seed=0, std=0.3):
    """The standard attention of both frameworks, same (larger than init) weights, float64."""
    module = jm.CausalSelfAttention(cfg)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4, cfg.n_embd)))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * std), params)
    torch_attn = tm.CausalSelfAttention(cfg).double()
    torch_attn.load_state_dict(flax_to_torch(params, template=torch_attn.state_dict()))
    return module, params, torch_attn


@pytest.mark.parametrize("extra", [(), ("rope",), ("rms_qknorm",)])
def test_zero_slots_is_plain_causal_attention(extra):
    plain = GPTConfig(components=extra, **SMALL)
    tape0 = plain.replace(components=extra + ("memory_tape",), memory_tape_slots=0)
    x = np.random.default_rng(1).normal(size=(2, 9, 16))
    module, params, torch_plain = attn_pair(plain)
    module0 = jm.CausalSelfAttention(tape0)
    params0 = module0.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 16)))
    assert params0["params"]["tape_k"].shape == (2, 0, 8)
    params0 = {"params": {**params["params"], "tape_k": params0["params"]["tape_k"], "tape_v": params0["params"]["tape_v"]}}
    np.testing.assert_allclose(module0.apply(params0, x), module.apply(params, x), rtol=0, atol=1e-14)
    torch0 = tm.CausalSelfAttention(tape0).double()
    torch0.load_state_dict(torch_plain.state_dict(), strict=False)
    with torch.no_grad():
        y0, y = torch0(torch.from_numpy(x)), torch_plain(torch.from_numpy(x))
    torch.testing.assert_close(y0, y, rtol=0, atol=1e-14)


@pytest.mark.parametrize("extra", [(), ("rope",), ("rms_qknorm",)])
def test_context_part_stays_causal_and_frameworks_agree(extra):
    cfg = GPTConfig(components=extra + ("memory_tape",), memory_tape_slots=4, **SMALL)
    module, params, torch_attn = attn_pair(cfg, seed=2)
    x = np.random.default_rng(3).normal(size=(2, 10, 16))
    x2 = x.copy()
    x2[:, 6:] = np.random.default_rng(4).normal(size=(2, 4, 16))  # change the future from position 6 on
    y, y2 = np.asarray(module.apply(params, x)), np.asarray(module.apply(params, x2))
    np.testing.assert_allclose(y[:, :6], y2[:, :6], rtol=0, atol=1e-14)
    assert np.abs(y[:, 6:] - y2[:, 6:]).max() > 1e-3
    with torch.no_grad():
        yt = torch_attn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(yt, y, rtol=0, atol=1e-12)


def test_one_softmax_over_tape_and_context():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=g, dtype=torch.float64) for _ in range(3))
    tk, tv = (torch.randn(3, 4, 5, generator=g, dtype=torch.float64) for _ in range(2))
    w = tape_attention_weights(q, k, tk)
    assert w.shape == (2, 3, 7, 11)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 7, dtype=torch.float64), rtol=0, atol=1e-14)
    assert (w[..., :4] > 0).all()  # every query, the first one too, reads the whole tape
    assert (w[..., 4:].triu(1) == 0).all()  # and no future context
    ref = w[..., :4] @ tv + w[..., 4:] @ v
    torch.testing.assert_close(tape_attention(q, k, v, tk, tv), ref, rtol=0, atol=1e-13)
    from jaxmodel.memory_tape import tape_attention as jta
    from jaxmodel.memory_tape import tape_attention_weights as jtw

    wj = jtw(*(jnp.asarray(a.numpy()) for a in (q, k, tk)))
    np.testing.assert_allclose(np.asarray(wj), w.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jta(wj, jnp.asarray(v.numpy()), jnp.asarray(tv.numpy()))), ref.numpy(), rtol=0, atol=1e-13)


def test_tape_keys_and_values_receive_gradients_in_both_frameworks():
    cfg = GPTConfig(components=("memory_tape",), **SMALL)
    from parity.checks import Pair, fixed_batches
    from dreamteam.config import Persona

    pair = Pair.make(Persona("tape", cfg), "float64")
    x, y = fixed_batches(cfg, 1, 2)[0]
    grads_j = jax.grad(jm.loss_fn)(pair.params, cfg, jnp.asarray(x), jnp.asarray(y))["params"]
    _, loss = pair.torch_model(torch.from_numpy(x), torch.from_numpy(y))
    loss.backward()
    for i in range(cfg.n_layer):
        attn_t = pair.torch_model.transformer.h[i].attn
        for name in ("tape_k", "tape_v"):
            g_t = getattr(attn_t, name).grad.numpy()
            g_j = np.asarray(grads_j["transformer"][f"h_{i}"]["attn"][name])
            assert g_t.shape == (2, 8, 8) and np.abs(g_t).max() > 1e-8, (i, name)
            np.testing.assert_allclose(g_t, g_j, rtol=0, atol=1e-14)


def test_tape_keys_are_not_rotated_with_rope():
    # the module's output equals the docstring formula with rotated queries and context keys and the tape keys
    # as they are; rotating the tape keys by the query's position instead would give other numbers
    from torchport.rope import apply_rope

    cfg = GPTConfig(components=("rope", "memory_tape"), memory_tape_slots=3, **SMALL)
    _, _, attn = attn_pair(cfg, seed=5)
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(1, 8, 16)))
    B, T, C = x.shape
    q, k, v = (a.view(B, T, 2, 8).transpose(1, 2) for a in attn.c_attn(x).split(C, dim=2))
    pos = torch.arange(T)
    q, k = apply_rope(q, pos, 8), apply_rope(k, pos, 8)
    with torch.no_grad():
        y = attn(x)
        ref = attn.c_proj(tape_attention(q, k, v, attn.tape_k, attn.tape_v).transpose(1, 2).reshape(B, T, C))
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-14)
        # tape keys rotated as if they sat at the query's position: scores q_i . R_i t = (R_i^T q_i) . t differ
        s_plain = q @ attn.tape_k.transpose(-1, -2)
        s_rot = torch.stack([q[:, :, i] @ apply_rope(attn.tape_k[None], torch.full((3,), i), 8)[0].transpose(-1, -2)
                             for i in range(T)], dim=2)
        assert (s_plain - s_rot).abs().max() > 1e-3


def test_bad_options():
    with pytest.raises(ConfigError, match="memory_tape_slots"):
        GPTConfig(components=("memory_tape",), memory_tape_slots=-1)
    with pytest.raises(ConfigError, match="mla"):
        GPTConfig(components=("memory_tape", "mla"))
    assert registry.build("baseline", add=("memory_tape",)).model.memory_tape_slots == 8


def test_anatomy_traces_of_the_persona_agree_and_leave_the_rest_to_the_tape():
    from jaxmodel import anatomy as janatomy
    from parity.checks import Pair
    from torchport import anatomy as tanatomy

    pair = Pair.make(registry.get("alan_turing"), "float64")
    idx = np.random.default_rng(0).integers(0, 50257, (1, 10))
    t = tanatomy.trace(pair.torch_model, torch.from_numpy(idx))
    j = janatomy.trace(pair.params, pair.persona.model, idx)
    assert t["attention"].shape == (4, 1, 4, 10, 10)
    assert np.max(np.abs(t["attention"].numpy() - np.asarray(j["attention"]))) <= 1e-12
    assert np.max(np.abs(t["lens_logits"].numpy() - np.asarray(j["lens_logits"]))) <= 1e-9
    a = t["attention"].numpy()
    assert np.all(np.triu(a, 1) == 0) and np.all(a.sum(-1) < 1.0)  # causal; the tape takes the rest
    # the last lens is the head's logits: the model's output where no head_mixture (ngram_memory) mixes into them
    bare = Pair.make(registry.build("alan_turing", remove=("ngram_memory",)), "float64")
    logits, _ = bare.torch_model(torch.from_numpy(idx), torch.from_numpy(idx))
    lens = tanatomy.trace(bare.torch_model, torch.from_numpy(idx))["lens_logits"]
    np.testing.assert_allclose(lens[-1].numpy(), logits.detach().numpy(), rtol=0, atol=1e-12)
