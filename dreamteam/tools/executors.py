"""Where independent jobs run, for `dreamteam bench` ((persona, seed) runs) and `dreamteam evolve` (candidate
evaluations): one function, `run`, and the command-line options that choose it.

    --executor local --workers 1    one job after the other, in this process
    --executor local --workers N    N jobs at once on this machine
    --executor ray                  one Ray task (1 CPU) per job, on a local Ray instance started for the command
    --executor ray --ray-address auto|HOST:PORT
                                    ... on an existing Ray cluster: `ray start --head` on the head node (and
                                    `ray start --address HEAD:6379` on the others) first, then `auto` on the head
                                    node or the head's address elsewhere

Jobs are functions of keyword arguments that write their own results (run records, metrics.json), so a job
that a cluster runs must see the same paths: on more than one machine, put the data and the output folder
on a shared filesystem. Ray needs `pip install 'dreamteam[ray]'`.
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

EXECUTORS = ("local", "ray")
# the repository root (train_mps.py, model.py): Ray workers import from it, as this process does
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # dreamteam/tools/X.py -> the checkout


class ExecutorError(ValueError):
    """An executor that cannot run here (Ray missing, a cluster not reachable); one clear message."""


def add_arguments(p, jobs: str, workers_default: str = "1: one after the other, in this process") -> None:
    """--executor, --workers and --ray-address on the parser of a command that runs `jobs`."""
    from dreamteam import arguments

    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help=f"where the {jobs} run: this machine, or Ray (pip install 'dreamteam[ray]')")
    p.add_argument("--workers", type=arguments.positive_int, default=None,
                   help=f"local executor: {jobs} at once (default: {workers_default}); ray without --ray-address: "
                        "the CPUs of the local Ray instance (default: all)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="ray executor: an existing cluster, 'auto' (the one `ray start --head` started on this "
                        "machine) or HOST:PORT (default: start a local Ray instance for this command)")


def run(fn: Callable, jobs: list[dict], *, executor: str = "local", workers: int | None = 1, ray_address: str | None = None,
        processes: bool = True, on_start: Callable | None = None, on_done: Callable | None = None) -> list:
    """fn(**job) for every job of `jobs`; the results in the order of `jobs`.

    local with workers == 1: one after the other in this process. local with more: a pool of `workers`,
    processes (spawned, so that each job has its own torch state and random generators) or, with
    processes=False, threads (for jobs that start a process of their own). ray: one task of 1 CPU per job.
    on_start(i) is called as job i is handed out, on_done(i, result) as it finishes; an exception of a job
    stops the run and propagates (jobs that must go on past a failure catch it and return it).
    """
    if executor not in EXECUTORS:
        raise ExecutorError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    results = [None] * len(jobs)

    def finished(i, result):
        results[i] = result
        if on_done is not None:
            on_done(i, result)

    if executor == "ray":
        _run_ray(fn, jobs, ray_address, workers, on_start, finished)
    elif (workers or 1) <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            if on_start is not None:
                on_start(i)
            finished(i, fn(**job))
    else:
        pool = (ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_unwind_on_sigterm) if processes
                else ThreadPoolExecutor(max_workers=workers))
        try:
            futures = {}
            for i, job in enumerate(jobs):
                if on_start is not None:
                    on_start(i)
                futures[pool.submit(fn, **job)] = i
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    finished(futures[f], f.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C or a failed job: hand out no more
            raise
        pool.shutdown()
    return results


def _terminated(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


def _unwind_on_sigterm() -> None:
    """In each pool worker: SIGTERM unwinds the job like an exception, which the pool hands back as its result.
    With the default action the worker would die, and a pool with a dead worker kills all the others at once:
    a sweep stopped by SIGTERM (`kill`, a scheduler) would lose every other run's state mid-save."""
    signal.signal(signal.SIGTERM, _terminated)


def _run_ray(fn, jobs, address, workers, on_start, finished) -> None:
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'dreamteam[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, num_cpus=workers if address is None else None,
                     runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}},
                     include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise ExecutorError(f"--ray-address {address}: no Ray cluster there ({str(e).splitlines()[0]})") from None
    remote = ray.remote(num_cpus=1)(fn)
    index = {}
    for i, job in enumerate(jobs):
        if on_start is not None:
            on_start(i)
        index[remote.remote(**job)] = i
    pending = list(index)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            finished(index[ref], ray.get(ref))
