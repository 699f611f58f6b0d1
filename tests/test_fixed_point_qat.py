"""fixed_point_qat: rounding error bound, the straight-through gradient, the int8 export, in both frameworks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import ConfigError, GPTConfig
from jaxmodel import fixed_point_qat as jq
from jaxmodel import model as jm
from parity.convert import _flatten, flax_key_to_torch
from torchport import fixed_point_qat as tq
from torchport.model import GPT, TiedHead

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


def weights(seed=0, shape=(7, 13)):
    w = np.random.default_rng(seed).normal(size=shape) * 0.05
    w[2] *= 40  # rows of very different ranges: the scale is per row
    w[5] = 0.0  # an all-zero row
    return w


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_error_at_most_half_a_step_and_codes_in_range(bits):
    w = weights()
    Q = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(-1, keepdims=True) / Q
    for q, codes in (
        (np.asarray(jq.fake_quant(jnp.asarray(w), bits)), np.asarray(jq.quantize(jnp.asarray(w), bits)[0])),
        (tq.fake_quant(torch.from_numpy(w), bits).numpy(), tq.quantize(torch.from_numpy(w), bits)[0].numpy()),
    ):
        assert np.all(np.abs(q - w) <= np.where(scale > 0, scale, 1) / 2 * (1 + 1e-12))
        assert np.all(np.abs(codes) <= Q) and np.all(codes == np.round(codes))
        assert len(np.unique(codes[0])) <= 2 * Q + 1
        np.testing.assert_array_equal(q[5], 0.0)
        np.testing.assert_allclose(np.abs(q).max(-1)[[0, 1, 2]], np.abs(w).max(-1)[[0, 1, 2]], rtol=1e-12)  # max kept
    np.testing.assert_array_equal(np.asarray(jq.fake_quant(jnp.asarray(w), bits)), tq.fake_quant(torch.from_numpy(w), bits).numpy())


def boundary_weights(dtype, seed=3, rows=64, cols=64):
    """Rows whose entries sit within 3 ulps of a code boundary (k + 1/2) * scale, each row's max at 127 * scale
    exactly (so the scale, max * (1/127), rounds to a known value): the weights a 1-ulp difference in W / scale
    rounds to the other code."""
    rng = np.random.default_rng(seed)
    amax = rng.uniform(0.01, 0.1, size=(rows, 1)).astype(dtype)
    scale = amax * dtype(1.0 / 127)
    w = (rng.integers(-126, 126, size=(rows, cols)) + dtype(0.5)).astype(dtype) * scale
    for _ in range(3):  # nudge by -3..3 ulps
        step = rng.integers(-1, 2, size=w.shape)
        w = np.where(step > 0, np.nextafter(w, dtype(np.inf)), np.where(step < 0, np.nextafter(w, dtype(-np.inf)), w))
    w[:, 0] = amax[:, 0]
    return w.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_at_the_boundaries_are_the_same_in_both_frameworks_jitted_or_not(dtype):
    # XLA compiles W / scale under jit into W * (1 / scale), 1 ulp from a true division at some weights; a
    # quantizer that divided in one framework would round some of these weights the other way
    w = boundary_weights(dtype)
    eager = np.asarray(jq.quantize(jnp.asarray(w), 8)[0])
    jitted = np.asarray(jax.jit(jq.quantize, static_argnums=1)(jnp.asarray(w), 8)[0])
    torch_codes = tq.quantize(torch.from_numpy(w), 8)[0].numpy()
    np.testing.assert_array_equal(jitted, eager)
    np.testing.assert_array_equal(torch_codes, jitted)
    true_division = torch.round(torch.from_numpy(w) / tq.row_scale(torch.from_numpy(w), 8)).numpy()
    assert (true_division != jitted).any()  # the weights do test the boundary: true division differs somewhere
    q_jit = np.asarray(jax.jit(jq.fake_quant, static_argnums=1)(jnp.asarray(w), 8))
    np.testing.assert_array_equal(tq.fake_quant(torch.from_numpy(w), 8).numpy(), q_jit)


def test_straight_through_gradient_is_identity_inside_and_zero_outside():
    w = weights(1)
    g = np.random.default_rng(2).normal(size=w.shape)
    scale = np.abs(w).max(-1, keepdims=True) / 127 / 3  # a third of the max scale: the largest weights clip
    scale[5] = 1.0
    inside = np.abs(np.round(w / scale)) <= 127
    assert inside.any() and (~inside).any()
    _, vjp = jax.vjp(lambda w: jq.fake_quant(w, 8, jnp.asarray(scale)), jnp.asarray(w))
    g_j = np.asarray(vjp(jnp.asarray(g))[0])
    wt = torch.tensor(w, requires_grad=True)
    tq.fake_quant(wt, 8, torch.from_numpy(scale)).backward(torch.from_numpy(g))
    for got in (g_j, wt.grad.numpy()):
        np.testing.assert_array_equal(got[inside], g[inside])  # exactly the incoming gradient
        np.testing.assert_array_equal(got[~inside], 0.0)
    # with the default max scale everything is inside: the gradient passes unchanged
    _, vjp = jax.vjp(lambda w: jq.fake_quant(w, 8), jnp.asarray(w))
    np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0]), g)


def tiny_cfg(components=("fixed_point_qat",)):
    return GPTConfig(vocab_size=96, block_size=16, n_layer=2, n_head=2, n_embd=16, components=components,
                     difference_ssm_layers=(0,))


def test_the_same_matrices_are_quantized_in_both_frameworks():
    cfg = tiny_cfg(("fixed_point_qat", "difference_ssm", "golden_swiglu"))
    params = jm.init_params(cfg, jax.random.PRNGKey(0))
    blocks = params["params"]["transformer"]
    jax_keys = sorted(flax_key_to_torch(("transformer",) + p) for p, leaf in _flatten(blocks) if p[0].startswith("h_") and jq.is_quantized(p, leaf))
    assert jax_keys == tq.quantized_keys(GPT(cfg))
    assert "transformer.h.0.attn.c_in.weight" in jax_keys and "transformer.h.0.attn.B" not in jax_keys
    model = GPT(cfg)
    assert all(type(m) is tq.FakeQuantLinear for n, m in model.transformer.h.named_modules() if isinstance(m, torch.nn.Linear))
    assert type(model.lm_head) is TiedHead  # the tied head (and the embeddings) stay float


def test_jax_model_reads_its_block_matrices_fake_quantized():
    cfg = tiny_cfg()
    params = jm.init_params(cfg, jax.random.PRNGKey(0), jnp.float64)
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 96, size=(2, 16)))
    tree = params["params"]["transformer"]
    quantized = {"params": {"transformer": {k: jq.fake_quant_block_params(v, 8) if k.startswith("h_") else v for k, v in tree.items()}}}
    a = jm.GPT(cfg).apply(params, idx)
    b = jm.GPT(cfg.replace(components=())).apply(quantized, idx)
    c = jm.GPT(cfg.replace(components=())).apply(params, idx)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-6  # quantization does change the numbers


def test_export_then_load_reproduces_the_fake_quantized_forward_exactly(tmp_path):
    cfg = tiny_cfg(("fixed_point_qat", "difference_ssm"))
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, 96, (3, 16))
    path = tmp_path / "m.int8.safetensors"
    tq.save_int8(model, path)
    state, meta = tq.load_int8(path)
    plain = GPT(cfg.replace(components=("difference_ssm",)))
    plain.load_state_dict(state)
    with torch.no_grad():
        a, _ = model(idx, idx)
        b, _ = plain(idx, idx)
    assert torch.equal(a, b)
    from safetensors.torch import load_file

    stored = load_file(str(path))
    assert stored["transformer.h.1.mlp.c_fc.weight.int8"].dtype == torch.int8
    assert stored["transformer.h.1.mlp.c_fc.weight.scale"].shape == (64,)
    assert stored["transformer.wte.weight"].dtype == torch.float32 and "lm_head.weight" not in stored
    with pytest.raises(ValueError, match="bits"):
        tq.export_int8(model, bits=9)


def test_bad_bits_is_a_config_error():
    with pytest.raises(ConfigError, match="fixed_point_qat_bits"):
        GPTConfig(components=("fixed_point_qat",), fixed_point_qat_bits=1)
    assert registry.build("baseline", add=("fixed_point_qat",)).model.has("fixed_point_qat")


def test_cli_export_int8(tmp_path, capsys):
    import os
    from pathlib import Path

    from safetensors.torch import save_model

    from dreamteam.tools.cli import main
    from tests.conftest import SHARED_DATA

    shared_data = next((d for d in (Path(os.environ.get("DREAMTEAM_DATA", "/nonexistent")), SHARED_DATA) if (d / "val.bin").exists()), None)
    if shared_data is None:
        pytest.skip("no val.bin: set DREAMTEAM_DATA or put the data at ../shared/data/shakespeare")

    torch.manual_seed(0)
    ckpt = tmp_path / "run.safetensors"
    save_model(GPT(registry.get("charles_babbage").model), str(ckpt))
    out = tmp_path / "run.int8.safetensors"
    assert main(["export-int8", str(ckpt), "--out", str(out), "--persona", "charles_babbage", "--windows", "4",
                 "--data-dir", str(shared_data)]) == 0
    text = capsys.readouterr().out
    assert "val_loss over 4 windows" in text and out.stat().st_size < ckpt.stat().st_size
    assert "int8 export - QAT forward = +0.00e+00" in text  # the export reproduces the QAT model exactly
    assert main(["export-int8", str(ckpt), "--out", str(out)]) == 2  # no record beside it, no --persona
