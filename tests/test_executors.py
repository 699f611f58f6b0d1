"""dreamteam/tools/executors.py, the one place where bench's runs and evolve's evaluations are handed out (Ray itself:
tests/test_evolve_ray.py)."""

import os

import pytest

from dreamteam.tools import executors


def square(x):
    return x * x


def pid_of(x):
    return x, os.getpid()


def test_results_come_back_in_job_order_whatever_finishes_first():
    done = []
    for kw in ({"workers": 1}, {"workers": 3, "processes": False}):
        done.clear()
        out = executors.run(square, [{"x": i} for i in range(7)], on_done=lambda i, r: done.append((i, r)), **kw)
        assert out == [i * i for i in range(7)] and sorted(done) == [(i, i * i) for i in range(7)]


def test_one_worker_runs_in_this_process_in_order():
    order = []
    executors.run(lambda x: order.append(("run", x)), [{"x": 0}, {"x": 1}], on_start=lambda i: order.append(("start", i)))
    assert order == [("start", 0), ("run", 0), ("start", 1), ("run", 1)]


def test_a_local_pool_of_processes_runs_jobs_in_other_processes():
    out = executors.run(pid_of, [{"x": i} for i in range(2)], workers=2)
    assert [x for x, _ in out] == [0, 1] and all(pid != os.getpid() for _, pid in out)


def test_a_failing_job_stops_the_run_and_propagates():
    def job(x):
        if x == 1:
            raise RuntimeError("job 1 failed")
        return x

    with pytest.raises(RuntimeError, match="job 1 failed"):
        executors.run(job, [{"x": 0}, {"x": 1}, {"x": 2}], workers=2, processes=False)
    with pytest.raises(executors.ExecutorError, match="unknown executor 'slurm'"):
        executors.run(job, [{"x": 0}], executor="slurm")


def stopped_or_finishing(x, folder):
    """Job 0 is stopped by SIGTERM the way train() stops: held back, its work saved, then handed on to the
    worker's handler. Job 1 is a sibling still writing its own work a moment later."""
    import signal
    import time
    from pathlib import Path

    from dreamteam import runs

    if x == 0:
        held = runs.DeferredSignals()
        os.kill(os.getpid(), signal.SIGTERM)
        (Path(folder) / "saved0").write_text("saved")
        held.restore()  # hands the SIGTERM on: in a pool worker, to the handler the pool installed
        return "not reached"
    time.sleep(1.5)
    (Path(folder) / "done1").write_text("done")
    return x


def test_a_job_stopped_by_sigterm_does_not_take_its_siblings_down(tmp_path):
    """A pool worker whose job is stopped by SIGTERM unwinds like an exception instead of dying: a dead worker
    breaks the pool, which then kills every other worker at once, mid-way through saving its own run."""
    import time

    with pytest.raises(SystemExit, match="terminated by signal"):
        executors.run(stopped_or_finishing, [{"x": 0, "folder": str(tmp_path)}, {"x": 1, "folder": str(tmp_path)}],
                      workers=2)
    assert (tmp_path / "saved0").exists()
    deadline = time.time() + 30
    while not (tmp_path / "done1").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "done1").exists(), "the sibling job was killed"
