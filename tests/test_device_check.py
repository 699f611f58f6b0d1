"""benchmarks/device_check.py on the CPU with tiny counts: the JSON's sections and keys, every comparison within
its tolerance, the projection's arithmetic, and bad input as one error line."""

import json

import pytest
import torch
from script_helpers import benchmark_script


@pytest.fixture(scope="module")
def device_check():
    return benchmark_script("device_check")


def test_relative_difference(device_check):
    b = torch.tensor([1.0, -4.0, 2.0], dtype=torch.float64)
    assert device_check.rel(b + torch.tensor([0.0, 0.0, 1e-3], dtype=torch.float64), b) == pytest.approx(1e-3 / 4)
    assert device_check.rel(torch.zeros(3), torch.zeros(3)) == 0.0
    assert device_check.rel(torch.ones(3), torch.zeros(3)) == float("inf")


def test_cpu_run_writes_every_section(device_check, short_val_data, tmp_path, capsys):
    out = tmp_path / "dc.json"
    rc = device_check.main(["--device", "cpu", "--out", str(out), "--data-dir", str(short_val_data),
                            "--personas", "baseline", "alan_turing",
                            "--bench-warmup", "1", "--bench-steps", "2", "--graph-steps", "2",
                            "--run-iters", "8", "--short-iters", "4"])
    report = json.loads(out.read_text())
    assert rc == 0 and report["ok"] is True, capsys.readouterr().out
    assert {"command", "device", "fused_loss", "personas", "bench", "runs", "graph", "wall_s", "rel_tol"} <= report.keys()
    assert report["device"]["device"] == "cpu" and report["device"]["torch"] == torch.__version__
    assert "PYTORCH_ENABLE_MPS_FALLBACK" in report["device"]["env"]
    # one step on the "device" (the CPU again) against the CPU: the same numbers, every gradient compared
    for name in ("baseline", "alan_turing"):
        r = report["personas"][name]
        assert r["ok"] and r["loss_rel"] == 0.0 and r["grad_rel_max"] == 0.0 and r["grads"] > 10
        # an untrained model's loss (alan_turing's starts from its n-gram memory's, 4.7 on this data)
        assert r["grads_missing"] == [] and r["loss_cpu"] == r["loss_device"] > 4.0
    f = report["fused_loss"]
    assert f["ok"] and max(f["loss_rel"], f["grad_h_rel"], f["grad_W_rel"]) <= 1e-5
    assert f["grad_h_rel"] > 0 and f["grad_W_rel"] > 0  # two computations (other rounding), not one compared with itself
    assert f["loss_fused"] == pytest.approx(f["loss_reference"]) and f["loss_reference"] > 5.0
    ms = report["bench"]["ms_per_step"]
    assert ms["eager"]["median_ms"] > 0 and ms["fast"]["median_ms"] > 0
    assert ms["graph"]["median_ms"] is None and "needs a CUDA device" in ms["graph"]["unavailable"]
    assert len(report["bench"]["times_ms"]["eager"]) == 2
    # runs: the projection is the line through the two runs' elapsed times
    (mode,) = report["runs"]
    r = report["runs"]["fast"]
    e = {n: 60 * r["runs"][str(n)]["elapsed_min"] for n in (4, 8)}
    assert mode == "fast" and r["iters"] == [4, 8] and r["runs"]["8"]["cuda_graph"] is False
    assert r["per_iter_ms"] == pytest.approx(1000 * (e[8] - e[4]) / 4)
    assert r["projected_elapsed_s"] == pytest.approx(e[8] + (10001 - 8) * (e[8] - e[4]) / 4)
    # graph: uncaptured on the CPU, the static-buffer step equals the eager one; muon's step is refused
    g = report["graph"]
    assert g["baseline"]["ok"] and g["baseline"]["captured"] is False and g["baseline"]["loss_rel"] == 0.0
    assert "cannot capture muon" in g["alan_turing"]["unavailable"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cpu", "--personas", "nobody"], "unknown persona(s) ['nobody']"),
    (["--device", "cpu", "--run-iters", "10", "--short-iters", "10"], "--short-iters 10 must be in [1, --run-iters 10)"),
    (["--device", "cpu", "--bench-steps", "0"], "--bench-steps and --graph-steps must be >= 1"),
])
def test_bad_input_is_one_error_line(device_check, tmp_path, capsys, argv, message):
    assert device_check.main([*argv, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


def test_missing_mps_is_an_error_not_a_fallback(device_check, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device_check.main(["--device", "mps", "--out", str(tmp_path / "x.json")]) == 2
    assert "MPS is not available" in capsys.readouterr().err
