"""train_mps.py's device handling: resolve_device with MPS and CUDA availability monkeypatched, the device
synchronization before every clock read that enters elapsed_min or ms_per_iter, and the run record's
device fields (the requested device, PYTORCH_ENABLE_MPS_FALLBACK)."""

import json
import types

import pytest
import torch

import train_mps


def machine(monkeypatch, mps: bool, cuda: int):
    """Pretend this machine has MPS or not and `cuda` CUDA devices."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)


@pytest.mark.parametrize("requested", ["mps", "mps:0"])
@pytest.mark.parametrize("cuda, fallback", [(0, "cpu"), (1, "cuda")])
def test_missing_mps_falls_back_in_one_line(monkeypatch, capsys, requested, cuda, fallback):
    machine(monkeypatch, mps=False, cuda=cuda)
    assert train_mps.resolve_device(requested) == fallback
    out = capsys.readouterr().out
    assert out == f"MPS is not available on this machine; running on {fallback} instead\n"


def test_present_devices_are_kept(monkeypatch, capsys):
    machine(monkeypatch, mps=True, cuda=2)
    for device in ("mps", "mps:0", "cuda", "cuda:0", "cuda:1", "cpu"):
        assert train_mps.resolve_device(device) == device
    assert capsys.readouterr().out == ""  # no fallback, nothing said


@pytest.mark.parametrize("requested, cuda, message", [
    ("cuda", 0, "'cuda' requested but CUDA is not available"),
    ("cuda:1", 0, "'cuda:1' requested but CUDA is not available"),
    ("cuda:1", 1, "this machine has 1 CUDA device(s), cuda:0 to cuda:0"),
])
def test_missing_cuda_is_one_clear_error(monkeypatch, requested, cuda, message):
    machine(monkeypatch, mps=False, cuda=cuda)
    with pytest.raises(train_mps.DeviceError) as e:
        train_mps.resolve_device(requested)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "mps:", "", "CPU"])
def test_unknown_device_names_the_valid_ones(monkeypatch, name):
    machine(monkeypatch, mps=True, cuda=1)
    with pytest.raises(train_mps.DeviceError, match=r"unknown device .*expected one of cpu, cuda, cuda:N, mps"):
        train_mps.resolve_device(name)


def test_second_mps_device_is_an_error(monkeypatch):
    machine(monkeypatch, mps=True, cuda=0)
    with pytest.raises(train_mps.DeviceError, match="MPS has one device"):
        train_mps.resolve_device("mps:1")


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_script_turns_device_errors_into_exit_2(monkeypatch, capsys, tmp_path, device):
    machine(monkeypatch, mps=False, cuda=0)
    with pytest.raises(SystemExit) as exit_:  # the parser checks --device before anything runs
        train_mps.main(["--device", device, "--out-dir", str(tmp_path), "--max-iters", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and err.count("\n") == 1 and repr(device) in err
    assert not list(tmp_path.iterdir())  # nothing was run, nothing recorded


def test_sync_waits_for_cuda_and_mps_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("cuda", device)))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps",)))
    train_mps._sync("cuda:1")
    train_mps._sync("cuda")
    train_mps._sync("mps")
    train_mps._sync("cpu")
    assert calls == [("cuda", "cuda:1"), ("cuda", "cuda"), ("mps",)]
    # CUDA not initialized yet (nothing queued): no synchronize, which would create a context
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    train_mps._sync("cuda")
    assert len(calls) == 3


def test_every_clock_read_follows_a_sync(short_val_data, tmp_path, monkeypatch):
    """t0, loop_start, each checkpoint evaluation's start and end, the loop's end: each read of the clock is
    right after a synchronization of the run's device, so queued work is charged where it was queued."""
    import time as real_time

    events = []
    monkeypatch.setattr(train_mps, "_sync", lambda device: events.append(("sync", device)))
    monkeypatch.setattr(train_mps, "time", types.SimpleNamespace(
        time=lambda: events.append(("clock",)) or real_time.time()))
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    # checkpoint evaluations (and resume checkpoints) at 2 and 4, then the final evaluation
    train_mps.train(data_dir=short_val_data, device_override="cpu", max_iters_override=5, out_dir=tmp_path,
                    progress=False, checkpoint_interval=2)
    clocks = [i for i, e in enumerate(events) if e == ("clock",)]
    # t0 + loop_start + 2 per checkpoint evaluation (3 of them) + 2 per resume checkpoint (2) + the loop's end
    assert len(clocks) == 1 + 1 + 2 * 3 + 2 * 2 + 1
    for i in clocks:
        assert i > 0 and events[i - 1] == ("sync", "cpu"), events[max(0, i - 2): i + 1]
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["env"] == {"PYTORCH_ENABLE_MPS_FALLBACK": "1"}
    assert rec["requested_device"] == "cpu" and rec["device"] == "cpu" and rec["cuda_graph"] is False
    assert [it for it, _ in rec["val_loss_curve"]] == [2, 4, 5]


def test_record_names_an_unset_fallback_and_the_requested_device(short_val_data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    machine(monkeypatch, mps=False, cuda=0)
    train_mps.train(data_dir=short_val_data, device_override="mps:0", max_iters_override=1, out_dir=tmp_path,
                    progress=False)
    assert "MPS is not available on this machine; running on cpu instead" in capsys.readouterr().out
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["env"] == {"PYTORCH_ENABLE_MPS_FALLBACK": None}
    assert rec["requested_device"] == "mps:0" and rec["device"] == "cpu"
