"""train_mps with pierre_simon_laplace: the training step minimizes succession_objective's loss, the
evaluations read plain cross-entropy of the posterior-mean weights, and the checkpoint holds those weights."""

import json

import numpy as np
import torch
from safetensors.torch import load_file

import train_mps
from torchport.posterior_mean import PosteriorMean


def test_smoke_run_evaluates_and_saves_the_averaged_weights(short_val_data, tmp_path, monkeypatch):
    made = []

    class Recorded(PosteriorMean):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train_mps, "PosteriorMean", Recorded)
    best_vloss, _ = train_mps.train("pierre_simon_laplace", data_dir=short_val_data, device_override="cpu",
                                    max_iters_override=5, out_dir=tmp_path, progress=False)
    (avg,) = made
    assert avg.steps == 5  # one update per optimizer step
    (ckpt,) = tmp_path.glob("*.safetensors")
    saved = load_file(str(ckpt))
    averaged = avg.module.state_dict()
    raw = dict(zip((n for n, _ in avg.module.named_parameters()), avg._src))
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, averaged[name], rtol=0, atol=0)
    moved = [n for n in raw if not torch.equal(raw[n].detach(), averaged[n])]
    assert moved  # the raw weights trained past the average
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert rec["status"] == "ok" and rec["best_vloss"] == best_vloss
    # the step-0 evaluation is the initial weights' plain cross-entropy: about ln V for a fresh model
    assert abs(rec["vloss_curve"][0][1] - np.log(50304)) < 0.1
    assert "laplace_rate" in " ".join(saved) and not any("wpe" in k for k in saved)
