"""jaxmodel/train.py: the JAX protocol loop, its jitted step and its honest val_loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file

from dreamteam import data, protocol, registry
from dreamteam.config import Recipe
from jaxmodel import model as gpt
from jaxmodel import recipe as recipes
from jaxmodel import train as jtrain

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "shakespeare"
needs_data = pytest.mark.skipif(
    not ((DATA_DIR / "train.bin").is_file() and (DATA_DIR / "val.bin").is_file()),
    reason=f"tiny-Shakespeare train.bin/val.bin not found in {DATA_DIR}",
)
CFG = registry.get("baseline").model


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, short_val_data):
    """One 101-iteration run (evaluations at it 0 and 100), shared by the tests that read its record."""
    out_dir = tmp_path_factory.mktemp("jaxruns")
    return jtrain.train("baseline", seed=0, data_dir=short_val_data, max_iters=101, out_dir=out_dir, progress=False), out_dir


@needs_data
def test_short_run_record(short_run):
    record, out_dir = short_run
    assert record["status"] == "ok" and record["engine"] == "jax" and record["max_iters"] == 101
    assert [it for it, _ in record["vloss_curve"]] == [0, 100]
    assert math.isfinite(record["best_vloss"])
    assert record["best_vloss"] == min(v for _, v in record["vloss_curve"])
    assert record["val_loss"] == record["val_loss_curve"][-1][1]
    assert record["val_loss_best"] == min(v for _, v in record["val_loss_curve"])
    assert record["fitness"] == pytest.approx(protocol.fitness(record["best_vloss"], record["elapsed_min"]))
    assert record["compile_s"] > 0 and record["ms_per_iter"] > 0
    # an untrained model is near ln(50304) = 10.83; 101 AdamW steps must bring the loss down
    assert record["vloss_curve"][0][1] == pytest.approx(math.log(protocol.VOCAB_SIZE), abs=0.1)
    assert record["val_loss"] < record["vloss_curve"][0][1]

    saved = json.loads((out_dir / f"{record['name']}.json").read_text())
    assert saved["status"] == "ok" and saved["val_loss"] == record["val_loss"]
    weights = load_file(str(out_dir / record["checkpoint"]))
    assert weights["transformer/wte/weight"].shape == (protocol.VOCAB_SIZE, protocol.N_EMBD)
    assert sum(w.size for w in weights.values()) == record["n_params"]


def _reference_and_jitted(dtype, steps=3):
    """Parameters after `steps` steps of the un-jitted reference and of make_train_step, on one fixed batch."""
    recipe = Recipe(schedule="cosine", warmup_iters=2, min_lr=3e-5, decay_iters=10)  # lr changes every step
    optimizer = recipes.build_optimizer(recipe, 10)
    rng = np.random.default_rng(0)
    x_BxT = rng.integers(0, protocol.GPT2_VOCAB_SIZE, size=(2, 64)).astype(np.int32)
    y_BxT = rng.integers(0, protocol.GPT2_VOCAB_SIZE, size=(2, 64)).astype(np.int32)
    ref_params = gpt.init_params(CFG, jax.random.PRNGKey(0), dtype)
    ref_state = optimizer.init(ref_params)
    jit_params = jax.tree.map(jnp.array, ref_params)  # the jitted step donates its inputs: its own copies
    jit_state = optimizer.init(jit_params)
    step = jtrain.make_train_step(CFG, optimizer)
    for it in range(steps):
        # the reference runs op by op, with no jit around the step
        grads = jax.grad(gpt.loss_fn)(ref_params, CFG, x_BxT, y_BxT)
        updates, ref_state = optimizer.update(grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
        jit_params, jit_state, _ = step(jit_params, jit_state, x_BxT, y_BxT, np.int32(it))
    got = dict(jax.tree_util.tree_flatten_with_path(jit_params)[0])
    return [(jax.tree_util.keystr(p), np.asarray(got[p]), np.asarray(r))
            for p, r in jax.tree_util.tree_flatten_with_path(ref_params)[0]]


def test_jitted_step_matches_unjitted_reference_float32():
    """The jitted, donating step computes loss_fn -> grad -> optimizer.update -> apply_updates.

    float32 bound as in parity/checks.py: each array's norm-wise relative error at most 1e-5. (Element by
    element, Adam's division by sqrt(v) + eps amplifies the rounding of near-zero gradients, which a fused and
    an op-by-op evaluation round differently; the float64 test below shows the math is the same.)
    """
    for name, got, ref in _reference_and_jitted(jnp.float32):
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.linalg.norm(got - ref) <= 1e-5 * np.linalg.norm(ref), name


@pytest.mark.slow  # ~20 s of float64 compilation; run with -m slow
def test_jitted_step_matches_unjitted_reference_float64():
    """In float64 the jitted step and the op-by-op reference agree element by element to 1e-9."""
    with jax.enable_x64(True):
        for name, got, ref in _reference_and_jitted(jnp.float64):
            assert got.dtype == np.float64, name
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12, err_msg=name)


def test_val_loss_is_token_mean_with_padding():
    """11 windows in batches of 8 (the last padded): the same as the mean cross-entropy of all at once."""
    params = gpt.init_params(CFG, jax.random.PRNGKey(1))
    rng = np.random.default_rng(1)
    x_NxT = rng.integers(0, protocol.GPT2_VOCAB_SIZE, size=(11, 64))
    y_NxT = rng.integers(0, protocol.GPT2_VOCAB_SIZE, size=(11, 64))
    got = jtrain.make_val_loss(CFG, batch_size=8)(params, x_NxT, y_NxT)
    want = float(gpt.loss_fn(params, CFG, jnp.asarray(x_NxT, jnp.int32), jnp.asarray(y_NxT, jnp.int32)))
    assert got == pytest.approx(want, rel=1e-6)


def test_unknown_persona(tmp_path):
    with pytest.raises(registry.UnknownPersonaError, match="unknown persona 'nobody'"):
        jtrain.train("nobody", data_dir=tmp_path, max_iters=1, out_dir=tmp_path, progress=False)


def test_missing_data(tmp_path, capsys):
    with pytest.raises(data.DataError, match="no train.bin/val.bin"):
        jtrain.train(data_dir=tmp_path, max_iters=1, out_dir=tmp_path, progress=False, environ={})
    assert jtrain.main(["--data-dir", str(tmp_path), "--max-iters", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no train.bin/val.bin")
