import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch (OpenMP) thread per worker process: two workers with two threads each on two cores make
    # OpenMP's barriers wait on descheduled threads, which slows small ops many times over; set before any
    # test module imports torch
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

# The benchmark files live in ../shared/data/shakespeare beside the checkout (never committed here).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "shakespeare"


@pytest.fixture
def shared_data() -> Path:
    """The benchmark files: ../shared/data/shakespeare beside the checkout, else $DREAMTEAM_DATA (as CI sets it)."""
    for folder in (SHARED_DATA, Path(os.environ.get("DREAMTEAM_DATA") or SHARED_DATA)):
        if (folder / "train.bin").exists() and (folder / "input.txt").exists():
            return folder
    pytest.skip(f"benchmark data not found at {SHARED_DATA} (../shared/data/shakespeare beside the checkout) "
                "nor $DREAMTEAM_DATA")


SHORT_VAL_TOKENS = 2049  # 32 windows of 64 tokens (+1 for the last target)


@pytest.fixture(scope="session")
def short_val_data(tmp_path_factory) -> Path:
    """The benchmark's train.bin beside the first 2049 tokens of its val.bin: a protocol run's whole pipeline,
    whose final evaluation over the validation set (docs/protocol.md `val_loss`) takes 4 batches instead of 71, for
    smoke runs whose assertions do not depend on the size of the validation set."""
    found = [d for d in (SHARED_DATA, Path(os.environ.get("DREAMTEAM_DATA", SHARED_DATA))) if (d / "train.bin").exists()]
    if not found:
        pytest.skip(f"benchmark data not found at {SHARED_DATA} nor $DREAMTEAM_DATA")
    folder = tmp_path_factory.mktemp("short_val")
    (folder / "train.bin").symlink_to(found[0] / "train.bin")
    np.fromfile(found[0] / "val.bin", dtype=np.uint16)[:SHORT_VAL_TOKENS].tofile(folder / "val.bin")
    return folder


@pytest.fixture(scope="module", autouse=True)
def _jax_float64(request):
    """A module marked `pytestmark = pytest.mark.jax_float64` runs with JAX's float64 switched on, from its first
    test to its last. A context, not jax.config.update: modules that share a worker process do not inherit it."""
    if request.node.get_closest_marker("jax_float64") is None:
        yield
        return
    import jax

    with jax.enable_x64(True):  # a new context per module (one instance entered twice does not restore)
        yield


def pytest_configure(config):
    """Registers the jax_float64 marker. One XLA compilation cache for the session: tests that build the same computation again (a persona's
    Flax init in float64 and float32, the same model in several tests) load the compiled executable instead of
    compiling it anew; the executable, and so every number, is the same. A temporary folder, removed at exit."""
    import atexit
    import shutil
    import tempfile

    import jax

    config.addinivalue_line("markers", "jax_float64: JAX computes in float64 while the module's tests run")

    cache = tempfile.mkdtemp(prefix="dreamteam-xla-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown, still before xdist reports "finished"
def pytest_sessionfinish(session):
    """Collect a worker's garbage while the controller still waits for it, then freeze what survives.

    Under xdist, a worker reports "finished" at the end of this hook; the controller then shuts its gateway
    down, and execnet gives the worker 5 seconds to return before it sends the worker SIGINT. What the
    worker still had to do then was pytest's own cleanup: five full garbage collections (to report
    unraisable exceptions), each one walking a heap of torch and JAX objects and calling JAX's
    garbage-collection callback; on a busy 2-core machine that outlasted the 5 seconds, and the SIGINT
    landed inside the callback as a KeyboardInterrupt traceback (PytestUnraisableExceptionWarning) at the
    end of the run. Collecting here first, then moving the survivors to the permanent generation
    (gc.freeze), leaves those five collections nothing to walk: they take milliseconds. Nothing goes
    unreported: anything collectable is collected here, under pytest's unraisable-exception hook.
    """
    import gc

    gc.collect()
    gc.freeze()
