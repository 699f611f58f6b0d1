"""The Ray executor (dreamteam/tools/executors.py) for real, on a local Ray instance of 2 CPUs: a generation of
`dreamteam evolve` and a `dreamteam bench` sweep spread over it.

Never skipped: CI installs the `ray` extra (.ci/run), and where Ray is missing the import below fails this
file loudly. Tiny shapes and few iterations; the instance starts once for the file.
"""

import json
import sys

import pytest
import ray

from dreamteam.tools import bench, evolve, executors  # noqa: E402
from dreamteam.tools.cli import main  # noqa: E402
from loop_helpers import VOCAB, small_data  # noqa: E402

# ray.init starts the local instance's processes through subprocess with a preexec_fn, so Python runs the
# at-fork hooks, and JAX (imported by other tests of this worker) warns that forking a multithreaded process
# may deadlock. The child execs Ray's own programs at once and never touches JAX's threads.
pytestmark = pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")


@pytest.fixture(scope="module")
def local_ray():
    # what executors.run starts for a command, with 2 CPUs and a small object store (jobs pass no data through it)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024 ** 2,
             runtime_env={"env_vars": {"PYTHONPATH": str(executors.PROJECT_ROOT)}})
    yield
    ray.shutdown()


def test_a_generation_evaluated_on_a_local_ray_instance(local_ray, tmp_path):
    data_dir = small_data(tmp_path / "data")
    table = evolve.evolve(tmp_path / "run", 1, 2, executor="ray", data_dir=data_dir, max_iters=20, val_windows=4,
                          model_options={"vocab_size": VOCAB}, log=lambda *_: None)
    for e in json.loads((tmp_path / "run" / "gen_000" / "population.json").read_text()):
        m = json.loads((tmp_path / "run" / "gen_000" / e["id"] / "metrics.json").read_text())
        assert m["status"] == "ok" and m["valid"]
    assert table.read_text().count("| ok |") == 2


def test_bench_spreads_persona_seed_runs_over_ray(local_ray, short_val_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)  # a relative --out: the Ray workers get it absolute
    argv = ["bench", "--personas", "baseline", "--seeds", "0", "1", "--device", "cpu", "--max-iters", "30",
            "--data-dir", str(short_val_data), "--out", "runs", "--executor", "ray"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "[1/2] baseline seed 0: done" in log and "2 trained, 0 skipped (done already), 0 failed" in log
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["status"] == "ok" and r["max_iters"] == 30 for r in records)
    assert records[0]["best_vloss"] != records[1]["best_vloss"]  # two seeds, two runs
    # done runs are found again and skipped, whichever executor trained them
    assert bench.sweep(["baseline"], [0, 1], device="cpu", out_dir=out, max_iters=30, data_dir=short_val_data,
                       executor="ray", log=lambda *_: None).skipped == [("baseline", 0), ("baseline", 1)]


def test_the_ray_executor_without_ray_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as where Ray is not installed: `import ray` fails
    with pytest.raises(executors.ExecutorError, match=r"pip install 'dreamteam\[ray\]'"):
        executors.run(dict, [{}], executor="ray")
    assert main(["bench", "--device", "cpu", "--max-iters", "5", "--seeds", "0", "--out", str(tmp_path / "b"),
                 "--data-dir", str(small_data(tmp_path / "data")), "--executor", "ray"]) == 2
    assert main(["evolve", "--generations", "1", "--population", "2", "--out", str(tmp_path / "e"), "--executor", "ray",
                 "--data-dir", str(tmp_path / "data"), "--max-iters", "5", "--model-option", f"vocab_size={VOCAB}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --executor ray needs Ray: pip install 'dreamteam[ray]'"] * 2
