"""Interrupts keep the work: a run stopped by Ctrl-C, SIGTERM or a crash resumes from its checkpoint to the numbers
an uninterrupted run gives, bit for bit on the CPU (docs/training.md).

The runs use a 256-id vocabulary (tests/loop_helpers.small_data) so that a step costs milliseconds: 120 iterations
with honest evaluations (and checkpoints) every 50, so that the protocol's evaluations at 0 and 100, the training
loss of each 100 steps and two checkpoints all fall on both sides of the interrupt at iteration 74.
"""

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_mps
from dreamteam import registry, runs
from dreamteam.tools import speed
from dreamteam.config import Persona
from loop_helpers import VOCAB, small_data

ITERS, INTERVAL, STOP_AT = 120, 50, 73  # the signal comes during iteration 73: the run stops before 74


def small(name, **changes) -> Persona:
    spec = registry.get(name)
    extra = {"adaptive_softmax_cutoffs": (32, 96)} if spec.model.has("adaptive_softmax") else {}
    return Persona(spec.name, spec.model.replace(vocab_size=VOCAB, **extra, **changes), spec.recipe)


PERSONAS = {
    "baseline_dropout": small("baseline", dropout=0.1),  # dropout masks: the random state must be restored
    "pierre_simon_laplace": small("pierre_simon_laplace"),  # posterior_mean's averaged weights, succession objective
    "alan_turing": small("alan_turing"),  # Muon's momentum buffers, memory tape, good_turing_prior
    "ada_lovelace": small("ada_lovelace"),  # moe_mlp's router-bias buffers and load sums, adaptive softmax
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return small_data(tmp_path_factory.mktemp("small_data"))


def run(spec, data_dir, out, **kw):
    return train_mps.train(spec, seed=0, data_dir=data_dir, device_override="cpu", max_iters_override=ITERS, out_dir=out,
                           progress=False, checkpoint_interval=INTERVAL, **kw)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """persona key -> (record, weights) of its uninterrupted run, trained once per module; the baseline's run also
    keeps every training loss value it computed (training_loss wrapped)."""
    done = {}

    def get(key):
        if key not in done:
            out = tmp_path_factory.mktemp(f"reference_{key}")
            real, losses = train_mps.training_loss, []

            def recording(*args, **kwargs):
                loss = real(*args, **kwargs)
                losses.append(loss.item())
                return loss

            train_mps.training_loss = recording
            try:
                run(PERSONAS[key], data_dir, out)
            finally:
                train_mps.training_loss = real
            (record,) = out.glob("*.json")
            done[key] = (json.loads(record.read_text()), load_file(next(out.glob("*.safetensors"))), losses)
        return done[key]

    return get


def interrupt_during(monkeypatch, iteration, signals=(signal.SIGINT,), error=None):
    """Deliver `signals` to this process (or raise `error`) after the optimizer step of `iteration`."""
    real = train_mps.recipes.optimizer_step

    def step(model, optimizer, recipe, it):
        real(model, optimizer, recipe, it)
        if it == iteration:
            for s in signals:
                signal.raise_signal(s)
            if error is not None:
                raise error

    monkeypatch.setattr(train_mps.recipes, "optimizer_step", step)


def stderr_lines(capsys) -> list[str]:
    """What the run wrote to stderr, less the busy-machine note (shown where the machine is loaded)."""
    return [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("note: the machine is busy")]


def assert_same_run(resumed: dict, resumed_weights: dict, reference):
    record, weights, _ = reference
    for key in ("best_vloss", "val_loss", "val_loss_best", "vloss_curve", "val_loss_curve", "train_loss_curve",
                "expert_load"):
        assert resumed.get(key) == record.get(key), key
    assert resumed_weights.keys() == weights.keys()
    assert all(torch.equal(resumed_weights[k], weights[k]) for k in weights)  # bit for bit


def resume_and_load(record_path: Path):
    train_mps.train(resume=record_path, progress=False)
    return json.loads(record_path.read_text()), load_file(record_path.with_suffix(".safetensors"))


@pytest.mark.parametrize("key", [
    "baseline_dropout", "pierre_simon_laplace", "alan_turing",
    pytest.param("ada_lovelace", marks=pytest.mark.slow),
])
def test_ctrl_c_then_resume_equals_the_uninterrupted_run(key, data_dir, reference, tmp_path, monkeypatch, capsys):
    interrupt_during(monkeypatch, STOP_AT)
    with pytest.raises(KeyboardInterrupt):  # the caller sees its Ctrl-C, once the run is saved
        run(PERSONAS[key], data_dir, tmp_path)
    (record_path,) = tmp_path.glob("*.json")
    stopped = json.loads(record_path.read_text())
    assert stopped["status"] == "interrupted" and stopped["error"] == f"interrupted by SIGINT (Ctrl-C) before iteration {STOP_AT + 1}"
    assert stopped["resume_iteration"] == STOP_AT + 1 and [it for it, _ in stopped["val_loss_curve"]] == [INTERVAL]
    checkpoint = tmp_path / stopped["resume_checkpoint"]
    assert checkpoint.is_file()
    (line,) = stderr_lines(capsys)  # one line: where it stopped, what was saved
    assert f"before iteration {STOP_AT + 1}" in line and str(record_path) in line and str(checkpoint) in line and "--resume" in line

    monkeypatch.undo()
    resumed, weights = resume_and_load(record_path)
    assert resumed["status"] == "ok" and resumed["resumed"] is True
    assert [(r["iteration"], r["status"]) for r in resumed["resumed_from"]] == [(STOP_AT + 1, "interrupted")]
    assert "resume_checkpoint" not in resumed and not checkpoint.exists()  # a finished run keeps no resume file
    assert_same_run(resumed, weights, reference(key))


def test_second_ctrl_c_stops_at_once_and_resumes_from_the_last_honest_evaluation(data_dir, reference, tmp_path,
                                                                                  monkeypatch, capsys):
    interrupt_during(monkeypatch, STOP_AT, signals=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        run(PERSONAS["baseline_dropout"], data_dir, tmp_path)
    (record_path,) = tmp_path.glob("*.json")
    stopped = json.loads(record_path.read_text())
    # stopped inside iteration 73, whose state is half-updated: the checkpoint is the one of iteration 50
    assert stopped["status"] == "interrupted" and stopped["error"] == "KeyboardInterrupt: Ctrl-C (SIGINT)"
    assert stopped["resume_iteration"] == INTERVAL
    (line,) = stderr_lines(capsys)
    assert line.startswith("stopped at once") and f"iteration {INTERVAL}" in line and str(record_path) in line

    monkeypatch.undo()
    resumed, weights = resume_and_load(record_path)
    assert resumed["resumed_from"][0]["iteration"] == INTERVAL
    assert_same_run(resumed, weights, reference("baseline_dropout"))


def test_a_run_killed_outright_resumes_from_the_record_of_its_last_checkpoint(data_dir, tmp_path, monkeypatch):
    """SIGKILL or a power cut writes nothing at the end: the record written with the checkpoint must do."""
    monkeypatch.setattr(train_mps.runs, "record_failure", lambda *a, **k: None)  # nothing is written after the kill
    interrupt_during(monkeypatch, INTERVAL + 3, signals=(), error=RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        run(PERSONAS["baseline_dropout"], data_dir, tmp_path)
    (record_path,) = tmp_path.glob("*.json")
    on_disk = json.loads(record_path.read_text())
    assert on_disk["status"] == "running" and on_disk["resume_iteration"] == INTERVAL
    record, state = train_mps.load_resume(record_path)
    assert state["next_it"] == INTERVAL and state["checkpoint_interval"] == INTERVAL
    assert [it for it, _ in state["val_curve"]] == [INTERVAL] and state["train_loss_steps"] == INTERVAL


def test_the_record_keeps_the_mean_training_loss_of_each_100_steps(reference):
    record, _, losses = reference("baseline_dropout")
    assert len(losses) == ITERS
    # (iteration, mean of the training losses since the previous evaluation): steps 0-99 at 100, 100-119 at the end
    assert [it for it, _ in record["train_loss_curve"]] == [100, ITERS]
    assert record["train_loss_curve"][0][1] == pytest.approx(sum(losses[:100]) / 100, rel=1e-6)
    assert record["train_loss_curve"][1][1] == pytest.approx(sum(losses[100:]) / (ITERS - 100), rel=1e-6)


# ---------------------------------------------------------------- --resume given something else: one line, exit 2


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def corrupt_checkpoint(d: Path) -> Path:
    (d / "r.resume.pt").write_bytes(b"PK\x03\x04 not a zip archive")  # a truncated torch.save file
    return write(d / "x.json", {**RECORD, "resume_checkpoint": "r.resume.pt"})


RECORD = {"name": "r", "persona": "baseline", "seed": 0, "device": "cpu", "max_iters": 10, "status": "interrupted"}


@pytest.mark.parametrize("case, make, words", [
    ("missing file", lambda d: d / "nothing.json", "no such file"),
    ("not JSON", lambda d: write(d / "x.json", "{"), "not a readable run record"),
    ("not a record", lambda d: write(d / "x.json", {"ms_per_step": {}}), "not a run record"),
    ("finished run", lambda d: write(d / "x.json", {**RECORD, "status": "ok"}), "the run finished"),
    ("no checkpoint yet", lambda d: write(d / "x.json", RECORD), "before its first checkpoint"),
    ("checkpoint gone", lambda d: write(d / "x.json", {**RECORD, "resume_checkpoint": "r.resume.pt"}), "is missing"),
    ("checkpoint corrupt", lambda d: corrupt_checkpoint(d), "is not readable"),
])
def test_resume_of_something_else_is_one_line_and_exit_2(case, make, words, tmp_path, capsys):
    path = make(tmp_path)
    assert train_mps.main(["--resume", str(path), "--no-progress"]) == 2, case
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --resume") and words in err


def test_resume_refuses_settings_of_its_own(tmp_path, capsys):
    path = write(tmp_path / "x.json", RECORD)
    assert train_mps.main(["--resume", str(path), "--seed", "3", "--max-iters", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seed" in err and "--max-iters" in err


# ---------------------------------------------------------------- held signals


def test_deferred_signals_hold_the_first_signal_and_hand_it_on():
    before = signal.getsignal(signal.SIGINT)
    held = runs.DeferredSignals()
    signal.raise_signal(signal.SIGINT)  # held: no KeyboardInterrupt here
    assert held.caught == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        held.restore()  # handed to the previous handler, Python's KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is before
    held.restore()  # a second restore delivers nothing

    held = runs.DeferredSignals()
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # the second one acts at once
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_without_a_signal_restore_changes_nothing():
    before = signal.getsignal(signal.SIGTERM)
    held = runs.DeferredSignals()
    assert signal.getsignal(signal.SIGTERM) is not before
    held.restore()
    assert signal.getsignal(signal.SIGTERM) is before and held.caught is None


# ---------------------------------------------------------------- resumed runs in the report


def test_speed_section_leaves_resumed_runs_out(tmp_path):
    base = {"persona": "baseline", "seed": 0, "device": "cpu", "max_iters": 10001, "status": "ok", "fast": True,
            "elapsed_min": 6.6, "ms_per_iter": 39.5, "best_vloss": 4.4, "val_loss": 5.1,
            "versions": {"processor": "cpu-x"}}
    fast = write(tmp_path / "fast.json", base)
    eager = write(tmp_path / "eager.json", {**base, "fast": False, "ms_per_iter": 160.0})
    resumed = write(tmp_path / "resumed.json", {**base, "resumed": True, "ms_per_iter": 20.0})
    out = speed.read_speed([fast, eager, resumed])
    assert [r["file"] for r in out["runs"]] == [str(eager), str(fast)]
    assert out["skipped_resumed"] == [str(resumed)]
    assert out["runs"][1]["ratio"] == pytest.approx(160.0 / 39.5)  # paired with the eager run, not the resumed one
    text = "\n".join(speed.render_speed(out))
    assert "Left out: resumed runs" in text and f"`{resumed}`" in text
    assert "resumed.json` | " not in text  # not a row of the table
    assert "skipped_resumed" not in speed.read_speed([fast, eager])  # results.json as before without resumed runs


def test_report_draws_the_training_loss_dashed_and_names_resumed_runs(tmp_path, monkeypatch):
    import matplotlib.axes

    from dreamteam.tools import report

    def record(seed, **extra):
        return {"name": f"baseline_seed{seed}_cpu_300it_20260101-00000{seed}", "persona": "baseline", "seed": seed,
                "device": "cpu", "max_iters": 300, "status": "ok", "config": {}, "recipe": {},
                "best_vloss": 7.0, "val_loss": 7.2, "val_loss_best": 7.2, "elapsed_min": 1.0, "ms_per_iter": 50.0,
                "fitness": 7.01, "val_loss_curve": [[300, 7.2]], **extra}

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    write(runs_dir / "a.json", record(0, train_loss_curve=[[100, 9.0], [200, 8.0], [300, 7.5]], resumed=True))
    write(runs_dir / "b.json", record(1))  # written before the training loss was recorded: still read
    drawn = []
    real_plot = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        lines = real_plot(self, *args, **kwargs)
        drawn.append((list(args[0]), lines[0].get_linestyle(), lines[0].get_color()))
        return lines

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    summary = report.write_report(runs_dir, tmp_path / "out")
    entries = summary["groups"][0]["personas"]["baseline"]["runs"]
    assert [e.get("train_loss_curve") for e in entries] == [[[100, 9.0], [200, 8.0], [300, 7.5]], None]
    assert [e.get("resumed", False) for e in entries] == [True, False]
    (solid,) = [d for d in drawn if d[1] == "-" and d[0] == [300]]
    (dashed,) = [d for d in drawn if d[1] == "--" and d[0] == [100, 200, 300]]
    assert dashed[2] == solid[2]  # the persona's colour
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "Resumed after an interrupt" in text and "`a.json`" in text.split("Resumed after an interrupt")[1].split("\n")[0]
