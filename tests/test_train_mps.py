"""The frozen protocol entry: its defaults, its frozen block, a smoke run, and recorded failures."""

import ast
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

import train_mps
from dreamteam import protocol

FROZEN = {
    "batch_size": protocol.BATCH_SIZE, "block_size": protocol.BLOCK_SIZE, "max_iters": protocol.MAX_ITERS,
    "eval_interval": protocol.EVAL_INTERVAL, "n_layer": protocol.N_LAYER, "n_head": protocol.N_HEAD,
    "n_embd": protocol.N_EMBD, "device": protocol.DEVICE,
}


def test_train_defaults_are_the_protocol():
    sig = inspect.signature(train_mps.train)
    defaults = {k: v.default for k, v in sig.parameters.items()}
    assert defaults["persona"] == "baseline"
    assert defaults["max_iters_override"] is None and defaults["device_override"] is None
    assert all(v.default is not inspect.Parameter.empty for v in sig.parameters.values())


def test_frozen_block_keeps_its_literals_and_comments():
    source = Path(train_mps.__file__).read_text()
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "train")
    first = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in FROZEN and name not in first and isinstance(node.value, ast.Constant):
                first[name] = (node.value.value, node.lineno)
    assert {k: v for k, (v, _) in first.items()} == FROZEN
    lines = source.splitlines()
    for name, (_, lineno) in first.items():
        assert lines[lineno - 1].rstrip().endswith("# not to be changed"), lines[lineno - 1]
    # the evaluation condition is every eval_interval iterations
    assert "if it % eval_interval == 0:" in source
    assert "return float(best_vloss), float(elapsed_min)" in source


def test_smoke_run_writes_record_and_checkpoint(short_val_data, tmp_path):
    best_vloss, elapsed_min = train_mps.train(data_dir=short_val_data, device_override="cpu", max_iters_override=101,
                                              out_dir=tmp_path, progress=False)
    assert isinstance(best_vloss, float) and isinstance(elapsed_min, float)
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["status"] == "ok" and rec["persona"] == "baseline" and rec["device"] == "cpu"
    assert [it for it, _ in rec["vloss_curve"]] == [0, 100]  # it % 100 == 0, before the step
    assert rec["best_vloss"] == best_vloss == min(v for _, v in rec["vloss_curve"])
    assert rec["val_loss_curve"][-1][0] == 101 and rec["val_loss"] == rec["val_loss_curve"][-1][1]
    assert rec["val_loss"] < math.log(50304) - 1.0  # it learned something in 101 steps
    assert rec["fitness"] == pytest.approx(best_vloss + 0.01 * elapsed_min)
    assert rec["fast"] is True and rec["fused_optimizer"] is True  # the fast path on the CPU: fused AdamW
    for key in ("val_loss_best", "elapsed_min", "ms_per_iter", "seed", "versions", "config", "recipe"):
        assert key in rec
    assert (tmp_path / rec["checkpoint"]).stat().st_size > 50304 * 32 * 4


def test_non_finite_loss_is_a_recorded_failure(short_val_data, tmp_path, monkeypatch):
    real_step = train_mps.recipes.optimizer_step

    def diverging_step(model, optimizer, recipe, it):  # a divergence at iteration 50
        real_step(model, optimizer, recipe, it)
        if it == 50:
            with torch.no_grad():
                model.transformer.ln_f.weight.fill_(float("nan"))

    monkeypatch.setattr(train_mps.recipes, "optimizer_step", diverging_step)
    with pytest.raises(train_mps.NonFiniteLossError, match="iteration 100"):
        train_mps.train(data_dir=short_val_data, device_override="cpu", max_iters_override=101, out_dir=tmp_path, progress=False)
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["status"] == "failed" and "NonFiniteLossError" in rec["error"]
    assert len(rec["vloss_curve"]) == 1  # what was measured before the failure is kept


def test_script_reports_bad_input_in_one_line(tmp_path, capsys):
    assert train_mps.main(["--persona", "nobody", "--device", "cpu", "--out-dir", str(tmp_path)]) == 2
    assert "unknown persona 'nobody'" in capsys.readouterr().err
    assert train_mps.main(["--data-dir", str(tmp_path), "--device", "cpu", "--out-dir", str(tmp_path)]) == 2
    assert "dreamteam prepare" in capsys.readouterr().err


def test_terminated_run_keeps_its_record(shared_data, tmp_path):
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-u", str(Path(train_mps.__file__)), "--data-dir", str(shared_data), "--device", "cpu",
           "--max-iters", "5000", "--out-dir", str(tmp_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # wait until the first evaluation has been measured
        if line.startswith("step 0:"):
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["status"] == "failed" and "terminated by signal" in rec["error"]
    assert rec["vloss_curve"][0][0] == 0
