"""benchmarks/loss_by_count.py: the validation loss split by how often each target occurs in train.bin."""

import json

import numpy as np
import pytest
from script_helpers import benchmark_script


def _script():
    return benchmark_script("loss_by_count")


def test_groups_partition_the_targets_and_contributions_add_up_to_the_mean():
    lbc = _script()
    rng = np.random.default_rng(0)
    counts_N = rng.choice([0, 1, 5, 50, 500], size=1000)
    loss_N = {0: 15.0, 1: 12.0, 5: 9.0, 50: 6.0, 500: 3.0}
    loss_N = np.array([loss_N[c] for c in counts_N]) + rng.normal(0, 0.1, 1000)
    rows = lbc.loss_by_count(loss_N, counts_N)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-12)
    assert sum(r["contribution"] for r in rows) == pytest.approx(loss_N.mean(), abs=1e-12)
    for r, c in zip(rows, [0, 1, 5, 50, 500]):
        assert r["share"] == pytest.approx((counts_N == c).mean())
        assert r["mean"] == pytest.approx(loss_N[counts_N == c].mean())


def test_a_checkpoint_gives_the_protocols_val_loss_back(tmp_path, short_val_data, capsys):
    """The per-token losses of a saved model average to torchport.evaluate.val_loss on the same windows, and the
    printed groups add up to it; a missing checkpoint is one clear error."""
    import torch
    from safetensors.torch import save_model

    from dreamteam import data
    from dreamteam.config import GPTConfig
    from dreamteam.tools.bench import spec_fields
    from torchport.evaluate import val_loss
    from torchport.model import GPT

    lbc = _script()
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, components=("rope",))
    model = GPT(config)
    save_model(model, str(tmp_path / "run.safetensors"))
    (tmp_path / "run.json").write_text(json.dumps({"config": spec_fields("baseline")["config"] | {
        "n_layer": 1, "components": ["rope"]}}))
    dataset = data.load(short_val_data)
    loss_N, y_N = lbc.token_losses(tmp_path / "run.safetensors", dataset)
    x_NxT, y_NxT = data.val_windows(dataset.val, config.block_size)
    assert loss_N.shape == (y_NxT.size,) and (y_N == y_NxT.reshape(-1)).all()
    assert loss_N.mean() == pytest.approx(val_loss(model, x_NxT, y_NxT, "cpu"), rel=1e-6)
    assert lbc.main([str(tmp_path / "run.safetensors"), "--data-dir", str(short_val_data)]) == 0
    out = capsys.readouterr().out
    assert f"val_loss {loss_N.mean():.4f}" in out
    total = sum(float(line.split()[-1]) for line in out.splitlines()[2:])
    assert total == pytest.approx(loss_N.mean(), abs=5e-4)
    assert lbc.main([str(tmp_path / "missing.safetensors"), "--data-dir", str(short_val_data)]) == 2
    assert "no run record" in capsys.readouterr().err
