"""The parity harness itself: every check passes for the baseline, and it detects a real difference."""

import numpy as np
import pytest
import torch

from dreamteam import registry
from parity import checks
from parity.__main__ import main as parity_main


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("persona", sorted(registry.PERSONAS))
def test_persona_parity(persona, dtype):
    results = checks.run_checks(registry.get(persona), dtype, batch_size=2, steps=20)
    expected = {"logits", "loss", "gradients", "optimizer_step", "trajectory_20_loss", "trajectory_20_params"}
    if registry.get(persona).model.has("posterior_mean"):
        expected.add("trajectory_20_posterior_mean")
    assert {r.check for r in results} == expected
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
    assert "6 passed, 0 failed" in capsys.readouterr().out
    assert parity_main(["--persona", "nobody"]) == 2
