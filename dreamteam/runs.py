"""Run records: one JSON file per training run with every metric of docs/protocol.md, written atomically."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dreamteam
from dreamteam import protocol

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write JSON through a temporary file and a rename: a crash never leaves a truncated record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=_jsonable) + "\n"  # fails before anything is written
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
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


def run_name(persona: str, seed: int, device: str, max_iters: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{persona}_seed{seed}_{device}_{max_iters}it_{stamp}"


def record_failure(path: str | os.PathLike, record: dict, error: BaseException, vloss_curve, val_curve) -> Path:
    """Mark the run failed with its error, keep what it had measured, and write the record."""
    record.update(status="failed", error=f"{type(error).__name__}: {error}", vloss_curve=vloss_curve, val_loss_curve=val_curve)
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


def summary(record: dict) -> str:
    return (f"best_vloss {record['best_vloss']:.4f}  val_loss {record['val_loss']:.4f}  "
            f"val_loss_best {record['val_loss_best']:.4f}  elapsed_min {record['elapsed_min']:.2f}  "
            f"ms/iter {record['ms_per_iter']:.1f}")


def _terminated(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


def raise_on_sigterm() -> None:
    """Make SIGTERM (kill, a scheduler's timeout) unwind like an exception, so a run's record is written.
    For command-line entry points only: a library call leaves signal handling to its caller."""
    signal.signal(signal.SIGTERM, _terminated)
