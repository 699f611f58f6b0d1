"""benchmarks/norm_inputs.py: what reaches each norm of a model, and the share of a DyT's outputs saturated."""


import numpy as np
import pytest
import torch
from script_helpers import benchmark_script

from dreamteam import registry
from torchport.model import GPT


def _script():
    return benchmark_script("norm_inputs")


def _batch():
    return np.random.default_rng(0).integers(0, 50257, size=(3, 64))


def test_layernorm_rows_measure_the_embedding_and_unit_outputs():
    """In a fresh baseline the first norm sees wte[x] + wpe (its RMS by hand); a LayerNorm with unit weight and no
    bias gives outputs of RMS 1 (up to its eps), and no saturated share."""
    torch.manual_seed(0)
    model = GPT(registry.get("baseline").model).eval()
    x = _batch()
    rows = _script().norm_inputs(model, x)
    assert [r["norm"] for r in rows] == [f"h.{i}.{n}" for i in range(4) for n in ("ln_1", "ln_2")] + ["ln_f"]
    emb = (model.transformer.wte.weight[torch.as_tensor(x)] + model.transformer.wpe.weight[:64]).double()
    assert rows[0]["input_rms"] == pytest.approx(float(emb.pow(2).mean().sqrt()), rel=1e-9)
    for r in rows:
        assert r["kind"] == "LayerNorm" and r["saturated"] is None
        assert r["output_rms"] == pytest.approx(1.0, rel=2e-2)


def test_a_dyt_whose_alpha_is_large_is_counted_saturated_and_one_whose_alpha_is_small_is_not():
    torch.manual_seed(0)
    model = GPT(registry.build("baseline", add=("dyt",)).model).eval()
    with torch.no_grad():
        model.transformer.h[0].ln_1.alpha.fill_(1e4)  # |alpha x| ~ 200 on the 0.02-scale stream: every unit at +-1
        model.transformer.ln_f.alpha.fill_(1e-3)  # |alpha x| ~ 2e-5: linear
    x = _batch()
    rows = {r["norm"]: r for r in _script().norm_inputs(model, x)}
    emb = model.transformer.wte.weight[torch.as_tensor(x)] + model.transformer.wpe.weight[:64]
    by_hand = float((torch.tanh(model.transformer.h[0].ln_1.alpha * emb).double().abs() >= 0.99).double().mean())
    assert rows["h.0.ln_1"]["kind"] == "DyT" and 0.99 < by_hand < 1.0  # all but the inputs within 2.6e-4 of 0
    assert rows["h.0.ln_1"]["saturated"] == by_hand
    assert rows["ln_f"]["saturated"] == 0.0
    assert rows["ln_f"]["output_rms"] == pytest.approx(1e-3 * rows["ln_f"]["input_rms"], rel=1e-6)


def test_a_missing_checkpoint_is_one_clear_error(tmp_path, short_val_data, capsys):
    assert _script().main([str(tmp_path / "none.safetensors"), "--persona", "baseline", "--data-dir", str(short_val_data)]) == 2
    assert "does not exist" in capsys.readouterr().err
