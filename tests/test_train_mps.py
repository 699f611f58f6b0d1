"""The frozen protocol entry: its defaults, its frozen block, a smoke run, and recorded failures."""

import ast
import inspect
import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch

import train_mps
from dreamteam import arguments, protocol, runs

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


def test_smoke_run_writes_record_and_checkpoint(short_val_data, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        best_vloss, elapsed_min = train_mps.train(data_dir=short_val_data, device_override="cpu", max_iters_override=101,
                                                  out_dir=tmp_path, progress=False, threads=1)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(best_vloss, float) and isinstance(elapsed_min, float)
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["threads"] == 1
    # the summary line naming the record is printed without progress bars too
    (summary,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("best_vloss ")]
    assert summary.endswith(f"record {record_path}") and f"val_loss {rec['val_loss']:.4f}" in summary
    # the mean training loss of steps 0-99 at the evaluation of 100, of step 100 at the end; learning shows in it
    assert [it for it, _ in rec["train_loss_curve"]] == [100, 101]
    assert math.log(50304) > rec["train_loss_curve"][0][1] > rec["train_loss_curve"][1][1]
    assert "resume_checkpoint" not in rec and not list(tmp_path.glob("*.resume.pt"))  # a finished run keeps none
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


@pytest.mark.parametrize("persona", ["pierre_simon_laplace", "ada_lovelace"])  # posterior_mean; moe_mlp
def test_the_loops_step_is_torchport_step(persona, short_val_data, tmp_path):
    """train_mps.py writes its training step out (`dreamteam check` reads it from the source); torchport.step's
    TrainStep, which parity and the device checks run, must be the same step: the same weights bit for bit."""
    from safetensors.torch import load_file

    from dreamteam import data, registry
    from dreamteam.components import ngram_memory
    from torchport import recipe as recipes
    from torchport.model import GPT
    from torchport.step import TrainStep, posterior_mean_of

    iters, threads = 3, torch.get_num_threads()
    try:
        train_mps.train(persona, 0, short_val_data, "cpu", iters, tmp_path, progress=False, threads=1)
        # train()'s model, optimizer and batches, stepped by TrainStep
        spec = registry.get(persona)
        config = spec.model.replace(n_layer=protocol.N_LAYER, n_head=protocol.N_HEAD, n_embd=protocol.N_EMBD,
                                    block_size=protocol.BLOCK_SIZE)
        train_ids = data.load(short_val_data, {}).train
        torch.manual_seed(0)
        model = GPT(config, token_counts=data.token_counts(train_ids, config.vocab_size),
                    ngram_stats=ngram_memory.stats_for(config, train_ids))
        step = TrainStep(model, recipes.build_optimizer(model, spec.recipe), spec.recipe, fast=True,
                         averaged=posterior_mean_of(model))
        sampler = data.BatchSampler(train_ids, protocol.BATCH_SIZE, protocol.BLOCK_SIZE, seed=(0, 0))
        for it in range(iters):
            step(*(torch.from_numpy(a) for a in sampler()), it)
    finally:
        torch.set_num_threads(threads)
    (checkpoint,) = tmp_path.glob("*.safetensors")  # the evaluated weights: the average where posterior_mean is on
    saved, mine = load_file(checkpoint), step.eval_model.state_dict()
    assert saved and all(torch.equal(saved[k], mine[k]) for k in saved)


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


def test_terminated_run_keeps_its_record_and_resumes(short_val_data, tmp_path, capsys):
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-u", str(Path(train_mps.__file__)), "--data-dir", str(short_val_data), "--device", "cpu",
           "--max-iters", "5000", "--out-dir", str(tmp_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until the first evaluation has been measured
        if line.startswith("step 0:"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143  # 128 + SIGTERM, without a traceback
    (record_path,) = tmp_path.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["status"] == "interrupted" and rec["error"].startswith("interrupted by SIGTERM before iteration ")
    assert rec["vloss_curve"][0][0] == 0
    stopped_at = rec["resume_iteration"]
    (line,) = [x for x in err.splitlines() if not x.startswith("note: the machine is busy")]
    assert line.startswith(rec["error"]) and str(record_path) in line and str(tmp_path / rec["resume_checkpoint"]) in line

    # resumed for a few more steps: the record's max_iters is the run's, so a shorter copy of it stands in
    short = tmp_path / "short" / record_path.name
    short.parent.mkdir()
    short.write_text(json.dumps({**rec, "max_iters": stopped_at + 3}))
    (tmp_path / rec["resume_checkpoint"]).rename(short.parent / rec["resume_checkpoint"])
    assert train_mps.main(["--resume", str(short), "--no-progress"]) == 0
    done = json.loads(short.read_text())
    assert done["status"] == "ok" and done["resumed"] is True and done["resumed_from"][0]["iteration"] == stopped_at
    assert done["name"] == rec["name"] and done["command"] == rec["command"]  # the same run, continued
    assert f"resuming {rec['name']} at iteration {stopped_at}" in capsys.readouterr().out


def test_files_are_written_with_the_users_umask(tmp_path):
    import numpy as np

    from dreamteam import data, runs

    old = os.umask(0o027)
    try:
        runs.write_json_atomic(tmp_path / "r.json", {"a": 1})
        data._write_atomic(tmp_path / "x.bin", np.arange(4, dtype=np.uint16))
        with runs.atomic_file(tmp_path / "c.pt", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {"r.json": 0o640, "x.bin": 0o640, "c.pt": 0o640}
    with pytest.raises(RuntimeError), runs.atomic_file(tmp_path / "r.json") as f:  # a failed write changes nothing
        f.write("partial")
        raise RuntimeError
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 3


def test_busy_machine_note():
    from dreamteam.runs import busy_machine_note

    assert busy_machine_note(2, load=1.9, cpu_count=2) is None
    note = busy_machine_note(2, load=4.5, cpu_count=2)
    assert len(note.splitlines()) == 1 and "4.5 on 2 cores" in note and "--threads 1" in note and "OMP_NUM_THREADS=1" in note
    one = busy_machine_note(1, load=4.5, cpu_count=2)
    assert "4.5 on 2 cores" in one and "--threads" not in one  # one thread already: nothing to advise


def test_set_trains_the_changed_recipe_as_bench_labels_it(short_val_data, tmp_path, capsys):
    out = tmp_path / "runs"
    assert train_mps.main(["--set", "weight_decay=0.0", "learning_rate=0.001", "--max-iters", "1", "--device", "cpu",
                           "--data-dir", str(short_val_data), "--out-dir", str(out), "--no-progress"]) == 0
    (record_path,) = out.glob("*.json")
    rec = json.loads(record_path.read_text())
    assert rec["persona"] == "baseline@weight_decay=0.0,learning_rate=0.001"
    ap = arguments.Parser()
    runs.add_run_options(ap)  # repeated --set adds up
    assert ap.parse_args(["--set", "weight_decay=0.0", "--set", "learning_rate=0.001"]).set == [
        "weight_decay=0.0", "learning_rate=0.001"]
    assert rec["recipe"]["weight_decay"] == 0.0 and rec["recipe"]["learning_rate"] == 0.001
    assert f"record {record_path}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--set", "weight_decay"], "expected KEY=VALUE"),
    (["--set", "n_layer=8"], "not a tunable field"),
    (["--set", "weight_decay=much"], "weight_decay=much"),
    (["--threads", "0"], "--threads: 0: expected a whole number of at least 1"),  # the parser's own check
])
def test_bad_run_options_are_one_line_and_exit_2(argv, words, tmp_path, capsys):
    try:
        code = train_mps.main([*argv, "--device", "cpu", "--out-dir", str(tmp_path)])
    except SystemExit as e:  # a bad value the parser checks: its one line, exit 2
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: " in err and words in err
    assert not list(tmp_path.iterdir())


def test_bench_passes_threads_to_every_run(tmp_path, monkeypatch):
    from dreamteam.tools import bench

    calls = []

    def fake_train(persona, seed, data_dir, device, max_iters, out_dir, progress, **kwargs):
        calls.append((seed, kwargs))
        return 4.0, 1.0

    monkeypatch.setattr(train_mps, "train", fake_train)
    bench.sweep(["baseline"], [0, 1], device="cpu", out_dir=tmp_path, max_iters=5, log=lambda *_: None, threads=1)
    assert calls == [(0, {"threads": 1}), (1, {"threads": 1})]
    with pytest.raises(bench.BenchError, match="--threads 0"):
        bench.sweep(["baseline"], [0], device="cpu", out_dir=tmp_path, max_iters=5, log=lambda *_: None, threads=0)


def test_dreamteam_train_passes_threads_set_and_resume_on(monkeypatch, capsys):
    from dreamteam.tools import cli

    seen = []
    monkeypatch.setattr(train_mps, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["train", "--threads", "1", "--set", "weight_decay=0.0", "eps=1e-6", "--resume", "r.json"]) == 0
    (argv,) = seen
    assert argv[argv.index("--threads") + 1] == "1" and argv[argv.index("--resume") + 1] == "r.json"
    assert argv[argv.index("--set") + 1: argv.index("--set") + 3] == ["weight_decay=0.0", "eps=1e-6"]
    assert cli.main(["train", "--engine", "jax", "--threads", "1"]) == 2  # the JAX loop takes none of them
    assert "apply to the torch engine" in capsys.readouterr().err
