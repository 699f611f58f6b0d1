"""The laplace-rates command: reads the decay rates of a checkpoint of either engine and draws them."""

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_model

from dreamteam import registry
from dreamteam.components.laplace_bias import initial_rates
from dreamteam.tools.cli import main
from torchport.laplace_bias_rates import laplace_rates_of
from torchport.model import GPT


def test_rates_of_a_fresh_torch_checkpoint_are_the_alibi_slopes_and_plot(tmp_path, capsys):
    torch.manual_seed(0)
    model = GPT(registry.get("pierre_simon_laplace").model)
    with torch.no_grad():
        model.transformer.h[2].attn.laplace_rate[1] = 0.0  # softplus(0) = ln 2: a changed rate is read back
    ckpt = tmp_path / "run.safetensors"
    save_model(model, str(ckpt))
    rates = laplace_rates_of(ckpt)
    assert rates.shape == (4, 4)
    np.testing.assert_allclose(rates[0], initial_rates(4), rtol=1e-6)
    assert rates[2, 1] == np.log(2.0)
    out = tmp_path / "docs" / "laplace_rates.png"
    assert main(["laplace-rates", str(ckpt), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "layer 2: s_0=0.25  s_1=0.6931" in capsys.readouterr().out


def test_flax_keys_and_errors(tmp_path, capsys):
    r = np.array([0.1, -2.0, 3.0], dtype=np.float32)
    save_file({f"transformer/h_{l}/attn/laplace_rate": r + l for l in range(2)}, str(tmp_path / "jax.safetensors"))
    rates = laplace_rates_of(tmp_path / "jax.safetensors")
    np.testing.assert_allclose(rates, np.log1p(np.exp(np.stack([r, r + 1]).astype(np.float64))), rtol=1e-12)
    save_model(GPT(registry.get("baseline").model), str(tmp_path / "base.safetensors"))
    assert main(["laplace-rates", str(tmp_path / "base.safetensors"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no laplace_rate" in capsys.readouterr().err
    assert main(["laplace-rates", str(tmp_path / "missing.safetensors")]) == 2
