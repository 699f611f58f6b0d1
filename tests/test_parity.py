"""The parity harness itself: every check passes for the baseline, and it detects a real difference."""

import numpy as np
import pytest
import torch

from dreamteam import registry
from parity import checks
from parity.__main__ import main as parity_main

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("persona", sorted(registry.PERSONAS))
def test_persona_parity(persona, dtype):
    results = checks.run_checks(registry.get(persona), dtype, batch_size=2, steps=20)
    expected = {"logits", "loss", "gradients", "optimizer_step", "trajectory_20_loss", "trajectory_20_params"}
    if registry.get(persona).model.has("posterior_mean"):
        expected.add("trajectory_20_posterior_mean")
    if registry.get(persona).model.has("fixed_point_qat"):
        expected.add("trajectory_20_code_flips")
    assert {r.check for r in results} == expected
    failed = [(r.check, r.max_error) for r in results if not r.passed]
    assert not failed, failed


# the fused chunked losses (torchport/fast.py, jaxmodel/fast.py): succession_objective's smoothed loss with its
# prior and z-loss; moe_mlp's loads through the fused path and byte_ngram_embedding's input. Batches of 2 x 64,
# test_persona_parity's: at 1 x 16, run after the laplace case, ada_lovelace's router bias once ended 3e-3
# (3 x moe_mlp_bias_rate) apart in both trajectories, which runs of that case alone did not reproduce
@pytest.mark.parametrize("persona", ["pierre_simon_laplace", "ada_lovelace"])
def test_fused_loss_trajectory_parity(persona):
    results = checks.run_checks(registry.get(persona), "float64", batch_size=2, steps=3, fast_trajectory=True)
    fast = {r.check: r for r in results if r.check.endswith("_fast")}
    assert set(fast) == {"trajectory_3_loss_fast", "trajectory_3_params_fast"}
    failed = [(r.check, r.max_error) for r in results if not r.passed]
    assert not failed, failed


def test_parity_detects_a_perturbed_weight():
    pair = checks.Pair.make(registry.get("baseline"), "float64")
    with torch.no_grad():
        pair.torch_model.transformer.h[1].mlp.c_fc.weight[3, 4] += 1e-6
    x, y = checks.fixed_batches(pair.persona.model, 1, 2)[0]
    logits_t, _ = pair.torch_model(torch.from_numpy(x), torch.from_numpy(y))
    from jaxmodel import model as jm

    logits_j = jm.GPT(pair.persona.model).apply(pair.params, x)
    err = checks.array_error(logits_t.detach().numpy(), logits_j, "float64")
    assert err > checks.BOUNDS["float64"]


def test_code_alignment_passes_a_rounding_straddle_and_catches_a_real_difference():
    """CodeAlignment sets a row whose codes differ to the reference row, and records how far apart the two
    weights were on the fixed-point scale: 1 ulp across a boundary is within the float32 bound, 0.3 of a code
    step is a real difference and is not."""
    from dreamteam.config import GPTConfig, Persona

    cfg = GPTConfig(vocab_size=96, block_size=16, n_layer=1, n_head=2, n_embd=16, components=("fixed_point_qat",))
    pair = checks.Pair.make(Persona("qat", cfg), "float32")
    key = "transformer.h.0.mlp.c_fc.weight"
    weight = dict(pair.torch_model.named_parameters())[key]
    reference = weight.detach().numpy().copy()
    scale = np.abs(reference).max(-1, keepdims=True) * np.float32(1 / 127)
    # row 3, column 5 just below a code boundary in the reference, just above it on the torch side; row 7,
    # column 2 0.3 of a code step apart across a boundary
    reference[3, 5] = np.float32(10.5) * scale[3, 0]
    while np.round(reference[3, 5] * (np.float32(1) / scale[3, 0])) != 10:
        reference[3, 5] = np.nextafter(reference[3, 5], np.float32(0))  # just below the boundary: code 10
    torch_side = reference.copy()
    while np.round(torch_side[3, 5] * (np.float32(1) / scale[3, 0])) == 10:
        torch_side[3, 5] = np.nextafter(torch_side[3, 5], np.float32(1))  # just above: code 11
    reference[7, 2] = np.float32(20.4) * scale[7, 0]  # code 20
    torch_side[7, 2] = np.float32(20.7) * scale[7, 0]  # code 21
    params = pair.params
    flat_path = ("transformer", "h_0", "mlp", "c_fc", "weight")
    node = params["params"]
    for name in flat_path[:-1]:
        node = node[name]
    node[flat_path[-1]] = reference
    with torch.no_grad():
        weight.copy_(torch.from_numpy(torch_side))

    alignment = checks.CodeAlignment(pair.torch_model, 8)
    alignment.record(0, params)
    alignment.align(0, pair.torch_model)
    assert alignment.rows == 2 and alignment.flips == 2
    assert alignment.worst == pytest.approx(0.3 / 127, rel=0.2) and alignment.worst > checks.BOUNDS["float32"]
    np.testing.assert_array_equal(weight.detach().numpy()[[3, 7]], reference[[3, 7]])  # the rows set to the reference
    np.testing.assert_array_equal(weight.detach().numpy()[0], torch_side[0])  # the others untouched

    alignment = checks.CodeAlignment(pair.torch_model, 8)  # the boundary straddle alone passes
    with torch.no_grad():
        weight[3, 5] = float(torch_side[3, 5])
    alignment.record(0, params)
    alignment.align(0, pair.torch_model)
    assert alignment.flips == 1 and 0 < alignment.worst < 1e-6


def test_error_metrics():
    a = np.array([1.0, 2.0, 3.0])
    assert checks.array_error(a + 1e-12, a, "float64") == pytest.approx(1e-12, rel=1e-3)
    assert checks.array_error(a * (1 + 1e-6), a, "float32") == pytest.approx(1e-6, rel=1e-3)


def test_cli_json_and_exit_code(tmp_path, capsys):
    out = tmp_path / "parity.json"
    assert parity_main(["--persona", "baseline", "--dtype", "float64", "--batch-size", "1", "--steps", "3", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())
    assert all(r["passed"] for r in rows) and rows[0]["persona"] == "baseline"
    assert "8 passed, 0 failed" in capsys.readouterr().out  # the 6 checks, and the fused-loss trajectory's 2
    assert parity_main(["--persona", "nobody"]) == 2


def test_importing_parity_leaves_jax_float64_off():
    """parity switches JAX's float64 on only inside its checks (a context), never for the importing process; a
    float64 Pair outside that context is one clear error instead of silently float32 weights."""
    import subprocess
    import sys

    code = (
        "import jax, pytest\n"
        "from dreamteam import registry\n"
        "from parity import checks\n"
        "assert not jax.config.jax_enable_x64\n"
        "with checks.float64():\n"
        "    with checks.float64():\n"
        "        assert jax.config.jax_enable_x64\n"
        "    assert jax.config.jax_enable_x64\n"
        "assert not jax.config.jax_enable_x64\n"
        "with pytest.raises(RuntimeError, match='float64'):\n"
        "    checks.Pair.make(registry.get('baseline'), 'float64')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
