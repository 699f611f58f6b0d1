"""The benchmark sweep (`dreamteam bench`) and the results report (`dreamteam report`).

One real tiny sweep (2 runs of 101 iterations on the CPU); everything else uses a stand-in for
train_mps.train or hand-written records, which are what the report reads anyway.
"""

import json
import statistics
from pathlib import Path

import pytest

import dreamteam
import train_mps
from dreamteam import config, registry, runs
from dreamteam.tools import bench, report
from dreamteam.tools.cli import build_parser, main
from dreamteam.components import COMPONENTS, Component

VERSION = dreamteam.__version__


def make_record(persona="baseline", seed=0, device="cpu", max_iters=101, val_loss=5.0, status="ok",
                version=VERSION, name=None, components=(), command="dreamteam bench --personas baseline",
                processor="x86_64", accelerator=None):
    """A run record as train_mps.train writes it, with every metric derived from val_loss."""
    name = name or f"{persona}_seed{seed}_{device.split(':')[0]}_{max_iters}it_20260101-000000"
    record = {
        "name": name, "persona": persona, "seed": seed, "device": device, "max_iters": max_iters,
        "config": {"components": list(components)}, "command": command, "status": status,
        "versions": {"dreamteam": version, "git_commit": "abc123", "python": "3.11.7", "processor": processor,
                     "platform": "Linux-test", "torch": "2.13.0+cpu"},
        "data_dir": "/data/shakespeare", "accelerator": accelerator,
    }
    if status == "ok":
        record.update(best_vloss=val_loss - 0.5, val_loss=val_loss, val_loss_best=val_loss - 0.01, elapsed_min=1.5,
                      ms_per_iter=9.0, fitness=val_loss - 0.5 + 0.015,
                      val_loss_curve=[[1000, val_loss + 1.0], [max_iters, val_loss]])
    else:
        record.update(error="NonFiniteLossError: validation loss is nan at iteration 100", val_loss_curve=[])
    return record


def write_record(folder, **kw):
    record = make_record(**kw)
    return runs.write_json_atomic(Path(folder) / f"{record['name']}.json", record)


class FakeTrain:
    """Stands in for train_mps.train: counts its calls and writes an ok record, or a failed one and raises."""

    def __init__(self, fail_seeds=(), exc=train_mps.NonFiniteLossError("validation loss is nan at iteration 100")):
        self.calls, self.fail_seeds, self.exc = [], set(fail_seeds), exc

    def __call__(self, persona, seed, data_dir, device_override, max_iters_override, out_dir, progress):
        spec = registry.get(persona) if isinstance(persona, str) else persona
        self.calls.append((spec.name, seed, device_override, max_iters_override))
        kw = dict(persona=spec.name, seed=seed, device=device_override or "cpu", max_iters=max_iters_override or 10001,
                  components=spec.model.components, name=f"{spec.name}_seed{seed}_{len(self.calls)}")
        if seed in self.fail_seeds:
            write_record(out_dir, status="failed", **kw)
            raise self.exc
        write_record(out_dir, val_loss=5.0 + 0.1 * seed, **kw)
        return 4.5, 1.5


# ---------------------------------------------------------------- the real sweep


def test_real_sweep_resumes_and_reports(short_val_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    argv = ["bench", "--personas", "baseline", "--seeds", "0", "1", "--device", "cpu", "--out", str(out),
            "--max-iters", "101", "--data-dir", str(short_val_data), "--no-progress"]
    assert main(argv) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["status"] == "ok" and r["max_iters"] == 101 and r["device"] == "cpu" for r in records)

    def must_not_train(*args, **kwargs):
        raise AssertionError("a run that is done already was trained again")

    monkeypatch.setattr(train_mps, "train", must_not_train)
    assert main(argv) == 0
    assert "0 trained, 2 skipped" in capsys.readouterr().out

    docs = tmp_path / "docs"
    assert main(["report", str(out), "--out", str(docs)]) == 0
    mean = statistics.mean(r["val_loss"] for r in records)
    std = statistics.stdev(r["val_loss"] for r in records)
    assert f"| `baseline` | 2 | {mean:.4f} ± {std:.4f} |" in (docs / "RESULTS.md").read_text()
    (group,) = json.loads((docs / "results.json").read_text())["groups"]
    assert group["id"] == "cpu_101it" and group["personas"]["baseline"]["seeds"] == [0, 1]
    assert [run["val_loss"] for run in group["personas"]["baseline"]["runs"]] == [r["val_loss"] for r in
                                                                                   sorted(records, key=lambda r: r["seed"])]
    for png in ("val_loss_curves_cpu_101it.png", "val_loss_cpu_101it.png"):
        assert (docs / png).stat().st_size > 1000

    # without --out the report lands beside the runs it reads (never in docs/), and reads them again there
    for _ in range(2):  # the second time, results.json beside the records is no run record
        assert main(["report", str(out)]) == 0
        assert f"| `baseline` | 2 | {mean:.4f} ± {std:.4f} |" in (out / "RESULTS.md").read_text()
        assert json.loads((out / "results.json").read_text())["groups"][0]["personas"]["baseline"]["seeds"] == [0, 1]

    # the same sweep on a local pool of 2 processes: the same runs, the same numbers, seed by seed
    monkeypatch.undo()  # the spawned processes train for real anyway
    pooled = tmp_path / "pooled"
    argv[argv.index(str(out))] = str(pooled)
    assert main(argv + ["--workers", "2"]) == 0
    assert "2 trained, 0 skipped (done already), 0 failed" in capsys.readouterr().out
    again = {r["seed"]: r for r in (json.loads(p.read_text()) for p in pooled.glob("*.json"))}
    for r in records:
        assert again[r["seed"]]["status"] == "ok"
        assert again[r["seed"]]["val_loss"] == pytest.approx(r["val_loss"], rel=1e-4)
        assert again[r["seed"]]["best_vloss"] == pytest.approx(r["best_vloss"], rel=1e-4)


# ---------------------------------------------------------------- the sweep, with a stand-in for train()


def test_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    fake = FakeTrain(fail_seeds={1})
    monkeypatch.setattr(train_mps, "train", fake)
    result = bench.sweep(["baseline"], [0, 1, 2], device="cpu", out_dir=tmp_path, max_iters=101, progress=False)
    assert [c[1] for c in fake.calls] == [0, 1, 2]
    assert result.ran == [("baseline", 0), ("baseline", 2)]
    assert result.failed == [("baseline", 1, "NonFiniteLossError: validation loss is nan at iteration 100")]
    failed_lines = [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    assert len(failed_lines) == 1 and "seed 1" in failed_lines[0]

    # the next sweep reruns the failed run only
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    result = bench.sweep(["baseline"], [0, 1, 2], device="cpu", out_dir=tmp_path, max_iters=101, progress=False)
    assert [c[1] for c in fake.calls] == [1] and len(result.skipped) == 2


def test_cli_returns_1_when_a_run_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mps, "train", FakeTrain(fail_seeds={0}, exc=RuntimeError("boom")))
    assert main(["bench", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path), "--max-iters", "101"]) == 1


@pytest.mark.parametrize("existing, skipped", [
    (dict(), True),
    (dict(max_iters=201), False),  # a smoke run of another length
    (dict(max_iters=10001), False),  # a full run does not stand for a smoke run, nor the reverse
    (dict(version="0.0.0"), False),  # another version of the code
    (dict(status="failed"), False),  # failed runs are rerun
    (dict(seed=5), False),
    (dict(persona="other"), False),
    (dict(device="cuda:0"), False),  # another device type
])
def test_skip_key_is_persona_seed_device_type_max_iters_version(tmp_path, monkeypatch, existing, skipped):
    write_record(tmp_path, **{"persona": "baseline", "seed": 0, "device": "cpu", "max_iters": 101, **existing})
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["baseline"], [0], device="cpu", out_dir=tmp_path, max_iters=101, progress=False)
    assert len(fake.calls) == (0 if skipped else 1)


def test_full_runs_pass_no_iteration_override_and_auto_leaves_the_device_to_train(tmp_path, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["baseline"], [3, 3], device="auto", out_dir=tmp_path, progress=False)
    assert fake.calls == [("baseline", 3, None, None)]  # a seed given twice runs once


def test_keyboard_interrupt_stops_the_sweep(tmp_path, monkeypatch, capsys):
    fake = FakeTrain(fail_seeds={0}, exc=KeyboardInterrupt())
    monkeypatch.setattr(train_mps, "train", fake)
    assert main(["bench", "--seeds", "0", "1", "--device", "cpu", "--out", str(tmp_path), "--max-iters", "101"]) == 130
    assert len(fake.calls) == 1 and "interrupted" in capsys.readouterr().err


def test_ablating_a_persona_without_components_adds_nothing(tmp_path, monkeypatch, capsys):
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["baseline"], [0], device="cpu", out_dir=tmp_path, max_iters=101, ablate="baseline", progress=False)
    assert [c[0] for c in fake.calls] == ["baseline"]
    assert "nothing to ablate" in capsys.readouterr().out


def test_ablation_runs_one_variant_per_component_and_the_report_tables_it(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "KNOWN_COMPONENTS", ("comp_a", "comp_b"))
    for name in ("comp_a", "comp_b"):  # toy declarations in a slot that holds several: they combine
        monkeypatch.setitem(COMPONENTS, name, Component(name, ("after_step",), "a toy component"))
    monkeypatch.setitem(registry.PERSONAS, "toy", config.Persona("toy", config.GPTConfig(components=("comp_a", "comp_b"))))
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["baseline"], [0], device="cpu", out_dir=tmp_path / "runs", max_iters=101, ablate="toy", progress=False)
    assert [c[0] for c in fake.calls] == ["baseline", "toy", "toy-comp_a", "toy-comp_b"]

    summary = report.write_report(tmp_path / "runs", tmp_path / "docs")
    assert summary["groups"][0]["ablations"]["toy"].keys() == {"toy-comp_a", "toy-comp_b"}
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "### Ablations of `toy`" in text and "| `toy-comp_b` | 1 |" in text

    # the persona retuned in the registry, and a run of it: its old variants are stale, not compared
    monkeypatch.setitem(registry.PERSONAS, "toy", config.Persona("toy", config.GPTConfig(components=("comp_a", "comp_b"),
                                                                                        dropout=0.1)))
    record = make_record(persona="toy", seed=0, components=("comp_a", "comp_b"), name="toy_seed0_cpu_101it_20990101-000000")
    record["config"]["dropout"] = 0.1
    runs.write_json_atomic(tmp_path / "runs" / f"{record['name']}.json", record)
    (group,) = report.write_report(tmp_path / "runs", tmp_path / "docs")["groups"]
    assert group["ablations"] == {} and group["stale_ablations"] == ["toy-comp_a", "toy-comp_b"]
    assert "earlier config or recipe of their persona" in (tmp_path / "docs" / "RESULTS.md").read_text()


def test_bad_input_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_mps, "train", FakeTrain())
    assert main(["bench", "--personas", "nobody", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "unknown persona 'nobody'" in capsys.readouterr().err
    assert main(["bench", "--device", "gpu", "--out", str(tmp_path)]) == 2
    assert "argument --device: unknown device 'gpu'" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--max-iters", "0", "--out", str(tmp_path)]) == 2
    assert "argument --max-iters: 0" in capsys.readouterr().err
    with pytest.raises(bench.BenchError, match="--device 'gpu': unknown device 'gpu'"):  # the library call too
        bench.sweep(["baseline"], [0], device="gpu", out_dir=tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "docs")]) == 2
    assert "no run records" in capsys.readouterr().err


def test_missing_data_stops_the_sweep(tmp_path, capsys):
    argv = ["bench", "--seeds", "0", "1", "--device", "cpu", "--max-iters", "101", "--out", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path / "nodata")]
    assert main(argv) == 2
    assert "dreamteam prepare" in capsys.readouterr().err


# ---------------------------------------------------------------- the report, from hand-written records

VAL_LOSS = {  # group -> persona -> val_loss per seed
    ("cpu", 10001): {"baseline": [5.10, 5.14, 5.18], "toy": [4.80, 4.82, 4.84], "close": [5.05, 5.10, 5.15],
                     "worse": [5.20, 5.30, 5.40]},
    ("cuda:0", 10001): {"baseline": [5.50, 5.70]},
    ("cpu", 101): {"baseline": [9.45]},
}


@pytest.fixture
def synthetic_runs(tmp_path):
    folder = tmp_path / "runs"
    for (device, iters), personas in VAL_LOSS.items():
        for persona, losses in personas.items():
            for seed, v in enumerate(losses):
                write_record(folder / "nested", persona=persona, seed=seed, device=device, max_iters=iters, val_loss=v)
    # a failed run, rerun since; a superseded run of an older version; a JSON file that is no record
    write_record(folder, persona="toy", seed=0, device="cpu", max_iters=10001, status="failed", name="toy_failed")
    write_record(folder, persona="toy", seed=1, device="cpu", max_iters=10001, val_loss=9.0, version="0.0.1",
                 name="toy_seed1_cpu_10001it_20250101-000000")
    (folder / "notes.json").write_text('{"not": "a record"}')
    return folder


def _section(text, heading):
    """The lines of the markdown section that starts with `heading`, up to the next '## '."""
    lines = text.split(heading, 1)[1].splitlines()[1:]
    return [line for line in lines[: next((i for i, l in enumerate(lines) if l.startswith("## ")), len(lines))]]


def test_report_names_the_processors_and_accelerators_a_table_was_timed_on(tmp_path):
    folder = tmp_path / "runs"
    for seed, cpu in enumerate(["AMD EPYC 7B13", "Intel(R) Xeon(R) Processor"]):
        write_record(folder, persona="baseline", seed=seed, device="cpu", max_iters=10001, processor=cpu)
    write_record(folder, persona="baseline", seed=0, device="cuda:0", max_iters=10001, processor="AMD EPYC 7B13",
                 accelerator="NVIDIA H100 80GB HBM3")
    report.write_report(folder, tmp_path / "docs")
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    cpu = "\n".join(_section(text, "## cpu, 10001 iterations (full protocol runs)"))
    assert ("Device: `cpu`; host processor: `AMD EPYC 7B13`, `Intel(R) Xeon(R) Processor`. Timings (`elapsed_min`, "
            "`ms_per_iter`) compare only between runs on one processor.") in cpu
    assert "accelerator" not in cpu
    cuda = "\n".join(_section(text, "## cuda, 10001 iterations (full protocol runs)"))
    assert "Device: `cuda:0`; accelerator: `NVIDIA H100 80GB HBM3`; host processor: `AMD EPYC 7B13`.\n" in cuda


def test_processor_name_is_the_cpu_model_where_the_system_gives_one():
    name = runs.processor_name()
    assert isinstance(name, str) and name.strip() == name and name
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [l.split(":", 1)[1].strip() for l in cpuinfo.read_text().splitlines() if l.startswith("model name")]
        if models and models[0]:
            assert name == models[0]


def test_report_tables_never_mix_devices_or_run_lengths(synthetic_runs, tmp_path):
    summary = report.write_report(synthetic_runs, tmp_path / "docs")
    assert [g["id"] for g in summary["groups"]] == ["cpu_10001it", "cuda_10001it", "cpu_101it"]
    text = (tmp_path / "docs" / "RESULTS.md").read_text()

    full_cpu = _section(text, "## cpu, 10001 iterations (full protocol runs)")
    rows = [line for line in full_cpu if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["baseline", "toy", "close", "worse"]  # baseline first, then by val_loss
    for persona, row in zip(["baseline", "toy", "close", "worse"], rows):
        losses = VAL_LOSS[("cpu", 10001)][persona]
        assert row.startswith(f"| `{persona}` | 3 | {statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f} |")
    assert rows[0].endswith("| — |")
    assert rows[1].endswith("| -0.3200 (yes) |")  # 0.32 below, beyond 0.04 + 0.02
    assert rows[2].endswith("| -0.0400 (no) |")  # within 0.04 + 0.05
    assert "Device: `cpu`; host processor: `x86_64`." in full_cpu

    cuda = _section(text, "## cuda, 10001 iterations (full protocol runs)")
    assert [line.split("`")[1] for line in cuda if line.startswith("| `")] == ["baseline"]
    assert "| `baseline` | 2 | 5.6000 ± 0.1414 |" in "\n".join(cuda) and "`cuda:0`" in "\n".join(cuda)

    smoke = _section(text, "## cpu, 101 iterations (smoke runs, not protocol results)")
    assert "| `baseline` | 1 | 9.4500 ± n/a |" in "\n".join(smoke)

    failures = _section(text, "## Failed runs")
    assert any("`toy_failed.json`" in line and line.endswith("| yes |") for line in failures)
    assert "`toy_seed1_cpu_10001it_20250101-000000.json`" in "\n".join(full_cpu)  # superseded, listed
    assert "- `dreamteam bench --personas baseline`" in full_cpu

    data = json.loads((tmp_path / "docs" / "results.json").read_text())
    toy = data["groups"][0]["personas"]["toy"]
    assert toy["seeds"] == [0, 1, 2] and [r["val_loss"] for r in toy["runs"]] == [4.80, 4.82, 4.84]
    assert toy["vs_baseline"]["below"] is True
    assert data["groups"][2]["personas"]["baseline"]["metrics"]["val_loss"]["std"] is None
    for g in data["groups"]:
        assert (tmp_path / "docs" / f"val_loss_curves_{g['id']}.png").exists()
        assert (tmp_path / "docs" / f"val_loss_{g['id']}.png").exists()


def test_report_is_reproducible(synthetic_runs, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["report", str(synthetic_runs), "--out", str(first)]) == 0
    assert main(["report", str(synthetic_runs), "--out", str(second)]) == 0
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and "RESULTS.md" in names and "results.json" in names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_summary_statistics():
    assert report.summarize([1.0, 2.0, 3.0]) == {"n": 3, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert report.summarize([4.0])["std"] is None
    assert report.summarize([None, float("nan")])["mean"] is None


def test_report_flags_runs_that_shared_the_machine(tmp_path):
    folder = tmp_path / "runs"
    quiet = make_record(seed=0, name="quiet")
    quiet.update(cpu_count=2, load_avg=[1.9, 2.3, 2.1])  # its own two threads: not flagged
    busy = make_record(seed=1, name="busy")
    busy.update(cpu_count=2, load_avg=[2.0, 3.6, 2.2])
    old = make_record(seed=2, name="old")  # recorded before load averages were kept: not flagged
    alone = make_record(seed=3, name="alone")
    alone.update(cpu_count=2, threads=1, load_avg=[1.0, 1.3])  # one thread, nothing beside it
    pair = make_record(seed=4, name="pair")
    pair.update(cpu_count=2, threads=1, load_avg=[1.9, 2.2])  # one thread beside another run: flagged
    for record in (quiet, busy, old, alone, pair):
        runs.write_json_atomic(folder / f"{record['name']}.json", record)
    summary = report.write_report(folder, tmp_path / "docs")
    assert sorted(r["file"] for r in report.shared_machine_runs(summary["groups"][0])) == ["busy.json", "pair.json"]
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "`busy.json` (load up to 3.6 on 2 cores)" in text and "`quiet.json` (" not in text
    assert "`pair.json` (load up to 2.2 on 2 cores, 1 torch thread(s))" in text and "`alone.json` (" not in text


# ---------------------------------------------------------------- recipe tuning (--set)


def test_set_labels_the_variant_and_trains_it_with_the_settings(tmp_path, monkeypatch):
    seen = []

    def fake(persona, seed, data_dir, device_override, max_iters_override, out_dir, progress):
        seen.append(persona)
        record = make_record(persona=persona.name, seed=seed, components=persona.model.components)
        record["recipe"], record["config"] = runs.as_json(persona.recipe), runs.as_json(persona.model)
        runs.write_json_atomic(Path(out_dir) / f"{record['name']}.json", record)

    monkeypatch.setattr(train_mps, "train", fake)
    argv = ["bench", "--personas", "pierre_simon_laplace", "--seeds", "0", "--device", "cpu", "--max-iters", "101",
            "--out", str(tmp_path), "--set", "weight_decay=0.1", "succession_objective_eps=0.2", "grad_clip=0"]
    assert main(argv) == 0
    (persona,) = seen
    assert persona.name == "pierre_simon_laplace@weight_decay=0.1,succession_objective_eps=0.2,grad_clip=0.0"
    assert persona.recipe == registry.get("pierre_simon_laplace").recipe.replace(weight_decay=0.1, grad_clip=0.0)
    assert persona.model.succession_objective_eps == 0.2
    assert persona.model.components == registry.get("pierre_simon_laplace").model.components
    assert main(argv) == 0 and len(seen) == 1  # the same variant again: done already
    # --set given twice adds up (argparse would otherwise keep only the last, silently training another variant)
    argv_twice = argv[:-3] + ["weight_decay=0.1", "--set", "succession_objective_eps=0.2", "grad_clip=0"]
    assert build_parser().parse_args(argv_twice).set == build_parser().parse_args(argv).set

    argv = ["bench", "--personas", "baseline+adaptive_softmax", "--seeds", "0", "--device", "cpu", "--max-iters",
            "101", "--out", str(tmp_path), "--set", "adaptive_softmax_cutoffs=4000,8000"]
    assert main(argv) == 0
    assert seen[-1].name == "baseline+adaptive_softmax@adaptive_softmax_cutoffs=4000:8000"
    assert seen[-1].model.adaptive_softmax_cutoffs == (4000, 8000)  # ints, not the characters of the text
    with pytest.raises(bench.BenchError, match="expected increasing counts"):  # the config's own check
        bench.with_settings("baseline+adaptive_softmax", bench.parse_settings(["adaptive_softmax_cutoffs=8000,4000"]))


@pytest.mark.parametrize("item, message", [
    ("weight_decay", "expected KEY=VALUE"),
    ("n_embd=64", "not a tunable field"),  # the protocol is frozen
    ("components=rope", "not a tunable field"),
    ("nonsense=1", "not a tunable field"),
    ("weight_decay=abc", "could not convert"),
    ("muon_bf16=maybe", "expected true or false"),
    ("adaptive_softmax_cutoffs=4000,x", "invalid literal"),
    ("adaptive_softmax_cutoffs=4000,8000", "baseline has no adaptive_softmax component"),
    ("muon_lr=0.01", "baseline has no muon component"),
    ("learning_rate=-1", "learning_rate=-1.0"),  # the Recipe's own check
])
def test_bad_settings_are_one_clear_error(tmp_path, monkeypatch, capsys, item, message):
    monkeypatch.setattr(train_mps, "train", FakeTrain())
    argv = ["bench", "--device", "cpu", "--max-iters", "101", "--out", str(tmp_path), "--set", item]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_persona_whose_recipe_changed_is_trained_again(tmp_path, monkeypatch, capsys):
    now = registry.get("baseline")
    for seed, recipe in ((0, now.recipe), (1, now.recipe.replace(weight_decay=0.5))):
        record = make_record(seed=seed)
        record["recipe"] = runs.as_json(recipe)
        runs.write_json_atomic(tmp_path / f"{record['name']}.json", record)
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["baseline"], [0, 1], device="cpu", out_dir=tmp_path, max_iters=101, progress=False)
    assert fake.calls == [("baseline", 1, "cpu", 101)]  # seed 0 has today's recipe, seed 1 an old one
    assert "config or recipe changed" in capsys.readouterr().out


def test_a_record_older_than_a_field_holds_its_default(tmp_path, monkeypatch, capsys):
    """A record written before a config field existed was trained as the field's default: it matches a
    persona at the default and not one that sets the field (leonardo_da_vinci's QK gain 1.86 is not its
    records from before rms_qknorm_qk_gain existed)."""
    persona = registry.get("leonardo_da_vinci")
    assert persona.model.rms_qknorm_qk_gain != 1.0
    for gain in (1.0, persona.model.rms_qknorm_qk_gain):
        model = persona.model.replace(rms_qknorm_qk_gain=gain)
        spec = bench.spec_fields(config.Persona(persona.name, model, persona.recipe))
        old = {"config": {k: v for k, v in spec["config"].items() if k != "rms_qknorm_qk_gain"},
               "recipe": spec["recipe"]}
        assert bench.same_spec(old, spec) is (gain == 1.0)
        assert bench.same_spec(spec, old) is (gain == 1.0)
    record = make_record(persona="leonardo_da_vinci", seed=0, components=persona.model.components)
    record.update(old)  # unit gains, from before the field
    runs.write_json_atomic(tmp_path / f"{record['name']}.json", record)
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["leonardo_da_vinci"], [0], device="cpu", out_dir=tmp_path, max_iters=101, progress=False)
    assert fake.calls == [("leonardo_da_vinci", 0, "cpu", 101)]  # registered with gain 1.86: trained again
    assert "config or recipe changed" in capsys.readouterr().out


def test_report_tables_tunings_and_never_averages_two_recipes(tmp_path):
    runs_dir = tmp_path / "runs"
    old, new = runs.as_json(config.Recipe()), runs.as_json(config.Recipe(weight_decay=0.01))
    for seed, val_loss, recipe, stamp in ((0, 5.0, old, "20260101-000000"), (1, 5.2, old, "20260101-010000"),
                                          (0, 4.8, new, "20260102-000000")):
        record = make_record(persona="toy", seed=seed, val_loss=val_loss, name=f"toy_seed{seed}_cpu_101it_{stamp}")
        record["recipe"] = recipe
        runs.write_json_atomic(runs_dir / f"{record['name']}.json", record)
    write_record(runs_dir, persona="toy@weight_decay=0.01", seed=0, val_loss=4.9)
    summary = report.write_report(runs_dir, tmp_path / "docs")
    (group,) = summary["groups"]
    toy = group["personas"]["toy"]
    assert toy["seeds"] == [0] and toy["metrics"]["val_loss"]["mean"] == 4.8  # the retuned run only
    assert group["superseded"] == ["toy_seed0_cpu_101it_20260101-000000.json", "toy_seed1_cpu_101it_20260101-010000.json"]
    assert group["tunings"]["toy"]["toy@weight_decay=0.01"]["delta_val_loss"] == pytest.approx(0.1)
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "### Recipe tuning of `toy`" in text and "| `toy@weight_decay=0.01` | 1 |" in text


def test_one_ablation_variant_runs_alone_by_its_label(tmp_path, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["pierre_simon_laplace-laplace_glu", "baseline+rope"], [1], device="cpu", out_dir=tmp_path,
                max_iters=101, ablate="pierre_simon_laplace", progress=False)
    names = [c[0] for c in fake.calls]
    # the listed variant is not planned twice by --ablate, and each label trains what it names
    assert names == ["pierre_simon_laplace-laplace_glu", "baseline+rope", "pierre_simon_laplace",
                     "pierre_simon_laplace-laplace_bias", "pierre_simon_laplace-succession_objective",
                     "pierre_simon_laplace-posterior_mean"]
    variant = registry.from_label("pierre_simon_laplace-laplace_glu")
    assert variant.model.components == ("laplace_bias", "succession_objective", "posterior_mean")
    assert variant.recipe == registry.get("pierre_simon_laplace").recipe


@pytest.mark.parametrize("label, message", [
    ("nobody-rope", "unknown persona 'nobody'"),
    ("baseline-rope", "has no component(s) ['rope']"),
    ("baseline+nothing", "unknown component(s) ['nothing']"),
    ("leonardo_da_vinci-rope+posterior_mean", "write it as 'leonardo_da_vinci+posterior_mean-rope'"),
])
def test_bad_persona_labels_are_one_clear_error(tmp_path, monkeypatch, capsys, label, message):
    monkeypatch.setattr(train_mps, "train", FakeTrain())
    assert main(["bench", "--personas", label, "--device", "cpu", "--max-iters", "101", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_a_set_run_of_the_registered_recipe_counts_as_the_persona(tmp_path, monkeypatch, capsys):
    """A `--set` run whose settings were then registered is the persona's run: bench skips retraining it, and
    a `--set` run of another recipe is no such run."""
    now = registry.get("baseline")
    for seed, recipe in ((0, now.recipe), (1, now.recipe.replace(weight_decay=0.5))):
        record = make_record(persona="baseline@weight_decay=0.1", seed=seed)
        record["recipe"] = runs.as_json(recipe)
        runs.write_json_atomic(tmp_path / f"{record['name']}.json", record)
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)
    bench.sweep(["baseline"], [0, 1], device="cpu", out_dir=tmp_path, max_iters=101, progress=False)
    assert fake.calls == [("baseline", 1, "cpu", 101)]
    assert "done already (baseline@weight_decay=0.1_seed0" in capsys.readouterr().out


def test_report_counts_a_set_run_of_the_current_recipe_in_the_persona_row(tmp_path):
    runs_dir = tmp_path / "runs"
    tuned, other = runs.as_json(config.Recipe(weight_decay=0.01)), runs.as_json(config.Recipe(weight_decay=0.5))
    for persona, seed, val_loss, recipe, stamp in (("toy", 1, 5.2, tuned, "20260102-000000"),
                                                   ("toy", 2, 5.4, tuned, "20260102-010000"),
                                                   ("toy@weight_decay=0.01", 0, 5.0, tuned, "20260101-000000"),
                                                   ("toy@weight_decay=0.5", 3, 4.0, other, "20260101-000000")):
        record = make_record(persona=persona, seed=seed, val_loss=val_loss,
                             name=f"{persona}_seed{seed}_cpu_101it_{stamp}")
        record["recipe"] = recipe
        runs.write_json_atomic(runs_dir / f"{record['name']}.json", record)
    (group,) = report.summarize_runs(runs_dir)["groups"]
    toy = group["personas"]["toy"]
    assert toy["seeds"] == [0, 1, 2] and toy["metrics"]["val_loss"]["mean"] == pytest.approx(5.2)
    assert [r["file"] for r in toy["runs"]][0] == "toy@weight_decay=0.01_seed0_cpu_101it_20260101-000000.json"
    assert set(group["tunings"]["toy"]) == {"toy@weight_decay=0.01", "toy@weight_decay=0.5"}  # both still tabled
    assert group["superseded"] == []


def test_report_shows_a_component_swap_once_and_finds_its_ablation_under_the_earlier_label(tmp_path):
    """ada_lovelace re-registered with byte_ngram_embedding for adaptive_softmax: the swap's runs (labelled
    'ada_lovelace+byte_ngram_embedding-adaptive_softmax') are the persona's row, not a second identical one;
    the earlier 'ada_lovelace-adaptive_softmax' (moe_mlp alone) is the new persona less byte_ngram_embedding;
    the earlier persona's own records are superseded."""
    from reference_models import REFERENCE_MODELS

    ada = registry.get("ada_lovelace")
    before = REFERENCE_MODELS["ada_lovelace"]
    runs_dir = tmp_path / "runs"
    swap = "ada_lovelace+byte_ngram_embedding-adaptive_softmax"
    for label, seed, val_loss, model in ((swap, 0, 4.80, before.replace(components=("moe_mlp", "byte_ngram_embedding"))),
                                         (swap, 1, 4.78, before.replace(components=("moe_mlp", "byte_ngram_embedding"))),
                                         ("ada_lovelace-adaptive_softmax", 0, 4.81, before.replace(components=("moe_mlp",))),
                                         ("ada_lovelace", 0, 5.03, before)):
        record = make_record(persona=label, seed=seed, val_loss=val_loss)
        record.update(bench.spec_fields(config.Persona(label, model, ada.recipe)))
        runs.write_json_atomic(runs_dir / f"{record['name']}.json", record)
    (group,) = report.summarize_runs(runs_dir)["groups"]
    assert set(group["personas"]) == {"ada_lovelace", "ada_lovelace-adaptive_softmax"}  # no row for the swap's label
    row = group["personas"]["ada_lovelace"]
    assert row["seeds"] == [0, 1] and row["metrics"]["val_loss"]["mean"] == pytest.approx(4.79)
    assert set(group["ablations"]) == {"ada_lovelace"}
    assert group["ablations"]["ada_lovelace"]["ada_lovelace-adaptive_softmax"]["delta_val_loss"] == pytest.approx(0.02)
    assert group["superseded"] == ["ada_lovelace_seed0_cpu_101it_20260101-000000.json"]
    text = report.render_markdown(report.summarize_runs(runs_dir), {})
    assert "| `ada_lovelace-adaptive_softmax` (the persona less `byte_ngram_embedding`) | 1 |" in text


def test_report_shows_a_retuned_persona_with_its_set_runs_before_any_run_under_its_own_name(tmp_path):
    """The registry's recipe decides the row: after `--set weight_decay=0.1` was registered, bench trains no
    `baseline` run of it, so the `baseline@weight_decay=0.1` runs are the persona's row and the persona's own
    runs of the old recipe, newer though they are, are superseded. Without any run of the registered recipe
    the row keeps the newest run's recipe."""
    runs_dir = tmp_path / "runs"
    registered, old = registry.get("baseline"), registry.get("baseline").recipe.replace(weight_decay=0.5)
    for persona, seed, val_loss, recipe, stamp in (("baseline@weight_decay=0.1", 0, 5.0, registered.recipe, "20260101-000000"),
                                                   ("baseline@weight_decay=0.1", 1, 5.2, registered.recipe, "20260101-010000"),
                                                   ("baseline", 0, 6.0, old, "20260102-000000"),
                                                   ("baseline", 1, 6.2, old, "20260102-010000")):
        record = make_record(persona=persona, seed=seed, val_loss=val_loss, name=f"{persona}_seed{seed}_cpu_101it_{stamp}")
        record["config"], record["recipe"] = runs.as_json(registered.model), runs.as_json(recipe)
        runs.write_json_atomic(runs_dir / f"{record['name']}.json", record)
    (group,) = report.summarize_runs(runs_dir)["groups"]
    row = group["personas"]["baseline"]
    assert row["seeds"] == [0, 1] and row["metrics"]["val_loss"]["mean"] == pytest.approx(5.1)
    assert group["superseded"] == ["baseline_seed0_cpu_101it_20260102-000000.json",
                                   "baseline_seed1_cpu_101it_20260102-010000.json"]

    for path in runs_dir.glob("baseline@*"):
        path.unlink()
    (group,) = report.summarize_runs(runs_dir)["groups"]
    row = group["personas"]["baseline"]
    assert row["seeds"] == [0, 1] and row["metrics"]["val_loss"]["mean"] == pytest.approx(6.1)
    assert group["superseded"] == []


# ---------------------------------------------------------------- the speed section (report --speed)


def _bench_step_file(path, eager_ms=150.0, fast_ms=50.0):
    d = {"command": "python benchmarks/bench_step.py --json x.json", "device": "cpu", "torch": "2.13.0+cpu",
         "threads": 2, "cpu_count": 2, "processor": "Intel(R) Xeon(R) Processor", "chunk": 48, "steps": 30,
         "load_average_before": [0.1, 0.2, 0.3], "load_average_after": [0.4, 0.5, 0.6],
         "ms_per_step": {"fast": {"median_ms": fast_ms, "min_ms": fast_ms - 1},
                         "eager": {"median_ms": eager_ms, "min_ms": eager_ms - 2}},
         "warmup_s": {"eager": 0.5, "fast": 0.1}}
    Path(path).write_text(json.dumps(d))
    return str(path)


def _timed_run_file(folder, fast, ms, processor="Intel(R) Xeon(R) Processor"):
    r = make_record(persona="baseline", seed=0, max_iters=10001, processor=processor,
                    name=f"baseline_{'fast' if fast else 'eager'}_{processor[:5]}")
    r.update(fast=fast, ms_per_iter=ms, elapsed_min=ms * 10001 / 60000, threads=2, cpu_count=2, load_avg=[0.5, 1.1])
    path = Path(folder) / f"{r['name']}.json"
    path.write_text(json.dumps(r))
    return str(path)


def test_report_speed_section_gives_each_variant_and_run_its_ratio_to_the_eager_reference(synthetic_runs, tmp_path):
    timed = tmp_path / "timed"
    timed.mkdir()
    files = [_bench_step_file(tmp_path / "step.json"), _timed_run_file(timed, True, 40.0),
             _timed_run_file(timed, False, 150.0), _timed_run_file(timed, True, 80.0, processor="AMD EPYC 7B13")]
    assert main(["report", str(synthetic_runs), "--out", str(tmp_path / "docs"), "--speed", *files]) == 0
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    section = "\n".join(_section(text, "## Speed against the eager reference"))
    assert "| `eager` | 150.0 | 148.0 | 1.00x | 0.5 |\n| `fast` | 50.0 | 49.0 | 3.00x | 0.1 |" in section
    assert "Command: `python benchmarks/bench_step.py --json x.json`." in section
    rows = [line for line in section.splitlines() if line.startswith("| `") and "timed" in line]
    assert len(rows) == 3
    xeon_fast = next(r for r in rows if "Xeon" in r and "| fast |" in r)
    assert "| 40.0 | 3.75x |" in xeon_fast  # 150 / 40, paired with the eager run on the same processor
    amd_fast = next(r for r in rows if "AMD" in r)
    assert "| 80.0 | n/a |" in amd_fast  # no eager run on that machine: never a ratio across machines
    summary = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert [v["ratio"] for v in summary["speed"]["steps"][0]["variants"]] == [1.0, 3.0]


@pytest.mark.parametrize("content", [None, "not json", '{"a": 1}', "failed run"])
def test_report_refuses_a_bad_speed_file_and_keeps_what_was_written(synthetic_runs, tmp_path, content, capsys):
    docs = tmp_path / "docs"
    assert main(["report", str(synthetic_runs), "--out", str(docs)]) == 0
    before = (docs / "RESULTS.md").read_text()
    bad = tmp_path / "bad.json"
    if content == "failed run":
        bad.write_text(json.dumps(make_record(status="failed")))
    elif content is not None:
        bad.write_text(content)
    assert main(["report", str(synthetic_runs), "--out", str(docs), "--speed", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert (docs / "RESULTS.md").read_text() == before


def test_base_label_is_the_persona_a_variant_starts_from():
    assert bench.base_label("alan_turing@good_turing_prior_lr_ratio=0.1") == "alan_turing"
    assert bench.base_label("ada_lovelace+byte_ngram_embedding-adaptive_softmax") == "ada_lovelace"
    assert bench.base_label("leonardo_da_vinci-mla") == "leonardo_da_vinci"
    assert bench.base_label("charles_babbage") == "charles_babbage"


def test_a_component_variant_is_the_persona_it_became():
    """A persona re-registered with a component swapped is the variant run before (components in another
    order, an option of the component swapped out left at its old value): bench skips it, report counts it.
    A changed option of a component that is on, or another component set, is another spec."""
    from reference_models import REFERENCE_MODELS

    ada = registry.get("ada_lovelace")  # registered with byte_ngram_embedding since the swap
    before = REFERENCE_MODELS["ada_lovelace"]  # moe_mlp + adaptive_softmax with tied tails
    # the variant as its records hold it: the old persona's config, adaptive_softmax off, its tied tails still set
    variant = config.Persona("ada_lovelace+byte_ngram_embedding-adaptive_softmax",
                             before.replace(components=("byte_ngram_embedding", "moe_mlp")), ada.recipe)
    assert variant.model.adaptive_softmax_tied_tails and not ada.model.adaptive_softmax_tied_tails
    spec = bench.spec_fields(ada)
    assert bench.same_spec(bench.spec_fields(variant), spec)
    assert bench.same_spec(spec, bench.spec_fields(variant))
    for other in (ada.model.replace(byte_ngram_embedding_max=5), ada.model.replace(components=("moe_mlp",)), before):
        assert not bench.same_spec(bench.spec_fields(variant), bench.spec_fields(config.Persona("x", other, ada.recipe)))
    # a Recipe option of a component that is off (alan_turing's good_turing_prior_lr_ratio after a swap)
    turing = registry.get("alan_turing")  # ngram_memory since the swap; the swap's runs kept the old ratio 0.1
    swap_run = config.Persona("t", turing.model, turing.recipe.replace(good_turing_prior_lr_ratio=0.1))
    assert turing.recipe.good_turing_prior_lr_ratio == 1.0
    assert bench.same_spec(bench.spec_fields(turing), bench.spec_fields(swap_run))
    assert not bench.same_spec(bench.spec_fields(turing),
                               bench.spec_fields(config.Persona("t", turing.model, turing.recipe.replace(muon_lr=0.01))))


def test_reuse_records_copies_a_run_trained_under_another_label_and_trains_only_the_rest(tmp_path, monkeypatch, capsys):
    """A search candidate's record of exactly a registered persona's config and recipe is that persona's run:
    `--reuse-records` copies it in under the persona's label (figures untouched, the source named) and
    trains only the seeds no record holds; a record of another recipe, length or data folder is not reused."""
    data_dir, search, out = tmp_path / "data", tmp_path / "search", tmp_path / "runs"
    data_dir.mkdir()
    turing = registry.get("alan_turing")

    def candidate_record(folder, seed, val_loss, stamp, recipe=turing.recipe, max_iters=10001, data=data_dir):
        record = make_record(persona="g3-cand_05", seed=seed, max_iters=max_iters, val_loss=val_loss,
                             name=f"g3-cand_05_seed{seed}_cpu_{max_iters}it_{stamp}")
        record.update(bench.spec_fields(config.Persona("x", turing.model, recipe, "")), data_dir=str(data),
                      batch_size=8, block_size=64)
        return runs.write_json_atomic(Path(folder) / f"run_s{seed}_{stamp}.json", record)

    candidate_record(search / "gen_003" / "cand_05", 0, 4.557, "20261202-205823")
    candidate_record(search / "confirm" / "cand_00", 0, 4.557, "20261202-205823")  # the confirmation's copy
    candidate_record(search / "confirm" / "cand_00", 1, 4.561, "20261203-061500")
    candidate_record(search / "gen_001" / "cand_02", 2, 4.40, "20261202-100000",
                     recipe=turing.recipe.replace(learning_rate=1e-3))  # another recipe
    candidate_record(search / "gen_001" / "cand_03", 2, 4.41, "20261202-110000", max_iters=101)  # a smoke run
    candidate_record(search / "gen_001" / "cand_04", 2, 4.42, "20261202-120000", data=tmp_path)  # other data
    fake = FakeTrain()
    monkeypatch.setattr(train_mps, "train", fake)

    result = bench.sweep(["alan_turing"], [0, 1, 2], device="cpu", out_dir=out, data_dir=str(data_dir),
                         progress=False, reuse=[search])
    assert fake.calls == [("alan_turing", 2, "cpu", None)]
    assert result.reused == [("alan_turing", 0), ("alan_turing", 1)] and result.ran == [("alan_turing", 2)]
    copied = json.loads((out / "alan_turing_seed0_cpu_10001it_20261202-205823.json").read_text())
    assert copied["persona"] == "alan_turing" and copied["val_loss"] == 4.557 and copied["seed"] == 0
    assert copied["reused"]["persona"] == "g3-cand_05" and copied["reused"]["name"] == "g3-cand_05_seed0_cpu_10001it_20261202-205823"
    assert bench.same_spec(copied, bench.spec_fields(turing))
    assert "reused" in capsys.readouterr().out

    # the copies count in the persona's row of the report, and a second sweep finds them done
    group = next(g for g in report.summarize_runs(out)["groups"] if g["max_iters"] == 10001)
    assert group["personas"]["alan_turing"]["seeds"][:2] == [0, 1]
    fake.calls.clear()
    again = bench.sweep(["alan_turing"], [0, 1], device="cpu", out_dir=out, data_dir=str(data_dir), progress=False,
                        reuse=[search])
    assert fake.calls == [] and again.reused == [] and len(again.skipped) == 2
    assert len(list(out.glob("*.json"))) == 3
    with pytest.raises(bench.BenchError, match="not found"):  # a mistyped folder is one clear error, before any run
        bench.sweep(["alan_turing"], [3], device="cpu", out_dir=out, data_dir=str(data_dir), progress=False,
                    reuse=[tmp_path / "absent"])
    assert fake.calls == []
