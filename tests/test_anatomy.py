"""anatomy: the traces agree across frameworks, attention rows are causal distributions, the lens ends at the logits."""

import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.tools.cli import main
from jaxmodel import anatomy as janatomy
from parity.checks import Pair
from torchport import anatomy as tanatomy

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


# leonardo_da_vinci+rms_embedding: the lens scores with the normalized rows E, not wte's (the last lens = the model)
@pytest.mark.parametrize("persona", ["baseline", "leonardo_da_vinci", "pierre_simon_laplace",
                                     "leonardo_da_vinci+rms_embedding"])
def test_trace_parity_and_properties(persona):
    pair = Pair.make(registry.from_label(persona), "float64")
    idx = np.random.default_rng(0).integers(0, 50257, (1, 12))
    t = tanatomy.trace(pair.torch_model, torch.from_numpy(idx))
    j = janatomy.trace(pair.params, pair.persona.model, idx)
    assert t["attention"].shape == (4, 1, 4, 12, 12) and t["lens_logits"].shape == (5, 1, 12, 50304)
    assert np.max(np.abs(t["attention"].numpy() - np.asarray(j["attention"]))) <= 1e-12
    assert np.max(np.abs(t["lens_logits"].numpy() - np.asarray(j["lens_logits"]))) <= 1e-9
    a = t["attention"].numpy()
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.triu(a, 1) == 0)  # causal: no weight on future keys
    logits, _ = pair.torch_model(torch.from_numpy(idx), torch.from_numpy(idx))
    torch.testing.assert_close(t["lens_logits"][-1], logits.detach(), rtol=1e-12, atol=1e-12)  # last lens = the model


def test_anatomy_command_writes_pngs(tmp_path, capsys):
    assert main(["anatomy", "--persona", "leonardo_da_vinci", "--text", "ROMEO:\nBut soft", "--out", str(tmp_path)]) == 0
    for name in ("leonardo_da_vinci_attention.png", "leonardo_da_vinci_logit_lens.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "untrained" in capsys.readouterr().out
    assert main(["anatomy", "--persona", "nobody", "--text", "x", "--out", str(tmp_path)]) == 2
