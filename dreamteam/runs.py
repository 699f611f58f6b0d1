"""Run records: one JSON file per training run with every metric of docs/protocol.md, written atomically.

Also what a run needs around its records: files written atomically with the user's umask, Ctrl-C and SIGTERM
held back to the end of a training iteration (so that an interrupted run saves a checkpoint it can resume
from), and the one-line note on a busy machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import dreamteam
from dreamteam import protocol

REPO_ROOT = Path(__file__).resolve().parent.parent


def umask() -> int:
    """The process's file-creation mask (0o022 on most systems). Linux states it in /proc/self/status; elsewhere
    it is read by setting it and putting it back, the only portable way."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
        return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w"):
    """A file object whose content replaces `path` when the block ends without an error: it is written to a
    temporary file beside `path` and renamed onto it, so a crash or an interrupt never leaves half a file.
    The file gets the permissions of any new file, 0o666 less the umask (mkstemp alone gives 0o600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def honour_umask(path: str | os.PathLike) -> None:
    """Give a file written by a library that creates it with mode 0o600 (safetensors) the permissions of any new file."""
    os.chmod(path, 0o666 & ~umask())


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write JSON through a temporary file and a rename: a crash never leaves a truncated record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=_jsonable) + "\n"  # fails before anything is written
    with atomic_file(path) as f:
        f.write(text)
    return path


def as_json(obj):
    """`obj` (dataclasses, numpy scalars, paths, tuples) as the plain JSON values a record holds."""
    return json.loads(json.dumps(obj, default=_jsonable))


def _jsonable(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def finite(x):
    """x as a float, or None where it is missing or not finite (JSON has no NaN)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def max_load(record: dict):
    """The highest 1-minute load average a run record saw at its checkpoint evaluations, or None."""
    loads = [x for x in (record.get("load_avg") or []) if finite(x) is not None]
    return max(loads) if loads else None


def processor_name() -> str:
    """The CPU's model name where the system gives it (Linux: /proc/cpuinfo; macOS: sysctl), else Python's
    word for it (often only the architecture, "x86_64"). Timings compare only between runs on one processor."""
    try:
        if sys.platform.startswith("linux"):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name") and ":" in line and line.split(":", 1)[1].strip():
                    return line.split(":", 1)[1].strip()
        elif sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def versions(**engines: str) -> dict:
    return {
        "dreamteam": dreamteam.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": processor_name(),
        **engines,
    }


def run_name(persona: str, seed: int, device: str, max_iters: int, stamp: str | None = None) -> str:
    """A run record's name; it ends in the run's start time (now, unless `stamp` gives it)."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    return f"{persona}_seed{seed}_{device}_{max_iters}it_{stamp}"


def error_text(error: BaseException) -> str:
    """'Type: message', or what the type means where the exception carries no message (a bare KeyboardInterrupt)."""
    if isinstance(error, Interrupted):
        return str(error)
    text = str(error) or {KeyboardInterrupt: "Ctrl-C (SIGINT)"}.get(type(error), "no message")
    return f"{type(error).__name__}: {text}"


def record_failure(path: str | os.PathLike, record: dict, error: BaseException, vloss_curve, val_curve) -> Path:
    """Mark the run failed (or 'interrupted', for Ctrl-C and termination) with its error, keep what it had
    measured, and write the record."""
    stopped = isinstance(error, (KeyboardInterrupt, Terminated))
    record.update(status="interrupted" if stopped else "failed", error=error_text(error), vloss_curve=vloss_curve,
                  val_loss_curve=val_curve)
    return write_json_atomic(path, record)


def record_success(path: str | os.PathLike, record: dict, *, best_vloss: float, vloss_curve, val_curve,
                   elapsed_min: float, loop_s: float, harness_s: float, **extra) -> Path:
    """Fill in every metric of docs/protocol.md from what the loop measured, and write the record.

    val_loss is the last full-validation point (the final model), val_loss_best the lowest of them;
    ms_per_iter is the loop's time without the harness's evaluations over max_iters.
    """
    record.update(
        status="ok",
        best_vloss=best_vloss,
        val_loss=val_curve[-1][1],
        val_loss_best=min(v for _, v in val_curve),
        elapsed_min=elapsed_min,
        ms_per_iter=1000 * loop_s / record["max_iters"],
        fitness=protocol.fitness(best_vloss, elapsed_min),
        harness_eval_s=harness_s,
        vloss_curve=vloss_curve,
        val_loss_curve=val_curve,
        **extra,
    )
    return write_json_atomic(path, record)


def add_run_options(ap) -> None:
    """The options of one training run: train_mps.py's, and `dreamteam train`'s, which passes them on (declared
    once here so that the two parsers cannot drift apart)."""
    from dreamteam import arguments, data, registry

    ap.add_argument("--persona", default="baseline", help=f"one of {sorted(registry.PERSONAS)}, or one with components "
                    "switched on and off: NAME+ADDED-REMOVED (adds first), e.g. baseline+rope")
    ap.add_argument("--seed", type=arguments.seed, default=0, help="seed of the weights and of the batches")
    ap.add_argument("--data-dir", default=None, help=f"default: ${data.DATA_ENV_VAR}, else ./data/shakespeare, else the "
                    "shipped tiny Shakespeare, prepared once into ~/.cache/dreamteam/shakespeare")
    ap.add_argument("--device", type=arguments.device, default=None,
                    help="default: the protocol's 'mps' (falls back to cuda, then cpu)")
    ap.add_argument("--max-iters", type=arguments.positive_int, default=None,
                    help="smoke runs only: fewer iterations than the protocol's 10001 (default: 10001)")
    ap.add_argument("--out-dir", default="runs", help="folder of the run record and checkpoint")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--threads", type=arguments.positive_int, default=None, metavar="N",
                    help="torch threads (default: torch's own, one per core); use 1 when sharing the machine")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="change Recipe/GPTConfig fields of the persona, as `dreamteam bench --set` (the run is "
                         "labelled NAME@KEY=VALUE)")
    ap.add_argument("--resume", default=None, metavar="RECORD.json",
                    help="continue a stopped run (Ctrl-C, SIGTERM, a crash) from its last checkpoint with its own "
                         "settings, to the numbers an uninterrupted run gives (docs/training.md; default: a new run)")


def busy_machine_note(threads: int, load: float | None = None, cpu_count: int | None = None) -> str | None:
    """One line when the machine is busy as a run starts (a 1-minute load average above the core count), with the
    advice where the run's own threads make it worse; None otherwise or where the system gives no load average.
    Competing OpenMP threads wait on each other: a baseline step measured 6463 ms with 2 threads on a 2-core
    machine at a load of 15 to 16, 1611 ms with one (docs/training.md)."""
    if load is None and hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
    cpu_count = cpu_count or os.cpu_count()
    if load is None or not cpu_count or load <= cpu_count:
        return None
    note = f"note: the machine is busy (1-minute load average {load:.1f} on {cpu_count} cores)"
    if threads > 1:
        return (note + f" and this run uses {threads} torch threads, which then wait on each other; use --threads 1 "
                "(or OMP_NUM_THREADS=1) when sharing the machine")
    return note + "; this run's timings will be inflated"


def summary(record: dict) -> str:
    return (f"best_vloss {record['best_vloss']:.4f}  val_loss {record['val_loss']:.4f}  "
            f"val_loss_best {record['val_loss_best']:.4f}  elapsed_min {record['elapsed_min']:.2f}  "
            f"ms/iter {record['ms_per_iter']:.1f}")


class Terminated(SystemExit):
    """SIGTERM turned into an exception by `raise_on_sigterm`."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that `DeferredSignals` held back, raised by the training loop between two iterations."""

    def __init__(self, signum: int, iteration: int):
        self.signum, self.iteration = signum, iteration
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}{' (Ctrl-C)' if signum == signal.SIGINT else ''} before iteration {iteration}")


class DeferredSignals:
    """Hold Ctrl-C (SIGINT) and SIGTERM back while a run trains, so that it stops between two iterations with a
    consistent state to save: the loop looks at `caught` once per iteration. A second signal acts at once.
    `restore()` puts the caller's handlers back and hands a held signal to them, so that the caller sees the
    interrupt as it would have (KeyboardInterrupt, its own SIGTERM handler, or the default: termination).
    Installed only in the main thread (the only one that receives signals); ignored signals stay ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.caught: int | None = None
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            handler = signal.getsignal(signum)
            if handler not in (signal.SIG_IGN, None):  # None: a handler not installed from Python, left alone
                self._previous[signum] = handler
                signal.signal(signum, self._hold)

    def _hold(self, signum, frame):
        if self.caught is None:
            self.caught = signum
        else:
            self.restore()  # the second Ctrl-C: now

    def restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if self.caught in previous:
            signal.raise_signal(self.caught)


def reported(error: BaseException | None) -> bool:
    """Whether a run already said where an interrupt stopped it: the interrupt is (or was raised while handling)
    an Interrupted, or the run marked it `run_reported`."""
    while error is not None:
        if isinstance(error, Interrupted) or getattr(error, "run_reported", False):
            return True
        error = error.__context__
    return False


def _terminated(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


def raise_on_sigterm() -> None:
    """Make SIGTERM (kill, a scheduler's timeout) unwind like an exception, so a run's record is written.
    For command-line entry points only: a library call leaves signal handling to its caller."""
    signal.signal(signal.SIGTERM, _terminated)
