"""The child side of `dreamteam evaluate`: runs one candidate's train() under observation, in its own process.

    python -m dreamteam.tools.harness_runner SPEC.json RESULT.json      (started by dreamteam.tools.harness, cwd = the candidate)

The parent (dreamteam/tools/harness.py) starts this module with the candidate's folder first on the import path,
so `from model import GPT` inside the candidate imports the candidate's own model.py (the project's only
where the candidate has none). Before the candidate's code runs, the Monitor installs:

- global optimizer step hooks (torch.optim.optimizer.register_optimizer_step_{pre,post}_hook): every
  outermost Optimizer.step() is a step (an optimizer whose step calls another's counts once), and so is
  GradScaler.step(optimizer), patched, whether or not the scaler skips the update; optimizers stepped one
  after another with no forward or backward between them (Muon + AdamW) are one step of the iteration;
- torch.autograd.backward, wrapped (Tensor.backward() calls it): the backward passes. Each step records how
  many training forwards and backward passes came since the previous one (the protocol: one of each);
- global module forward hooks (torch.nn.modules.module.register_module_forward_{pre,}_hook): a top-level
  module call (not nested in another module's forward) whose first argument is a 2-D integer tensor is a
  batch of token ids entering the model; with gradients disabled or the module in eval mode it is an
  evaluation, otherwise a training forward. Every batch's shape is checked (8 x 64), and every row of an
  evaluation batch is looked up in val.bin and train.bin (a hash of its first three tokens, then an exact
  comparison of the 64), so an evaluation on training data is seen whatever the code that drew it. The
  evaluation batches between two steps are one evaluation (its batches counted); forwards inside a
  function named like `generate` (sampling text) are not evaluations;
- the harness's own evaluations (torchport.evaluate.val_loss, used by the project's train_mps.py for its
  honest metrics, and the val_loss this runner computes afterwards) are not counted.

After train() returns, the runner takes the model from the last evaluation forward and computes val_loss on
every 64-token window of val.bin, with the model as training left it. All of it goes to RESULT.json, the
counts also when train() crashed or the harness stopped it with SIGTERM (a timeout), with the model's class,
file and parameter count.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import signal
import sys
import time
import traceback
import types
from collections import Counter
from pathlib import Path

import numpy as np

BATCH_SHAPE = (8, 64)


class SourceIndex:
    """Finds whether a row of token ids is a window of a token array: hash of its first 3 tokens, then compare."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids.astype(np.int64)
        a = self.ids
        self.keys = np.sort(self._key(a[:-2], a[1:-1], a[2:])) if len(a) > 3 else np.zeros(0, np.int64)
        self.order = np.argsort(self._key(a[:-2], a[1:-1], a[2:]), kind="stable") if len(a) > 3 else np.zeros(0, np.int64)

    @staticmethod
    def _key(a, b, c):
        V = 1 << 17
        return (a * V + b) * V + c

    def contains(self, row: np.ndarray) -> bool:
        if len(row) < 3:
            return False
        k = self._key(int(row[0]), int(row[1]), int(row[2]))
        lo, hi = np.searchsorted(self.keys, k), np.searchsorted(self.keys, k, side="right")
        n = len(row)
        for pos in self.order[lo:hi]:
            if pos + n <= len(self.ids) and np.array_equal(self.ids[pos:pos + n], row):
                return True
        return False


class Terminated(BaseException):
    """SIGTERM from the harness (a timeout): ends train() so that the counts so far are written."""


class Monitor:
    MAX_SAMPLES = 5

    def __init__(self, source_file: str, val: np.ndarray, train: np.ndarray):
        self.source_file = os.path.realpath(source_file)
        self.val_index, self.train_index = SourceIndex(val), SourceIndex(train)
        self.steps = 0
        self.evals = 0
        self.eval_at_step: list[int] = []
        self.eval_events: list[dict] = []  # one per evaluation: the eval forwards taken between two optimizer steps
        self.eval_sources: Counter = Counter()
        self.step_lines: Counter = Counter()
        self.eval_lines: Counter = Counter()
        self.train_forwards = 0
        self.generation_forwards = 0
        self.backwards = 0
        self.step_mismatch: list[dict] = []  # steps not preceded by exactly one training forward and one backward
        self.step_mismatch_count = 0
        self.bad_shapes: list = []
        self.train_eval_line = None
        self.unknown_eval_line = None
        self.model = None  # the module of the last evaluation forward: the candidate's model
        self.train_model = None  # the module of the last training forward
        self._opt_depth = 0
        self._mod_depth = 0
        self._suppressed = 0
        self._fwd_since = 0  # training forwards and backward passes since the last counted step
        self._bwd_since = 0
        self._group: set[int] = set()  # the optimizers stepped since the last forward/backward: one step

    @contextlib.contextmanager
    def suppressed(self):
        """The harness's own evaluations: not the candidate's, not counted."""
        self._suppressed += 1
        try:
            yield
        finally:
            self._suppressed -= 1

    def caller_line(self):
        f = sys._getframe(2)
        while f is not None:
            if os.path.realpath(f.f_code.co_filename) == self.source_file:
                return f.f_lineno
            f = f.f_back
        return None

    # optimizer steps: an outermost Optimizer.step() or GradScaler.step(optimizer). Several optimizers
    # stepped one after the other (Muon for matrices, AdamW for the rest) with no forward or backward between
    # them are one step of the iteration.
    def _count_step(self, optimizer):
        if self._fwd_since == 0 and self._bwd_since == 0 and self.steps > 0 and id(optimizer) not in self._group:
            self._group.add(id(optimizer))
            return
        line = self.caller_line()
        if (self._fwd_since, self._bwd_since) != (1, 1):
            self.step_mismatch_count += 1
            if len(self.step_mismatch) < self.MAX_SAMPLES:
                self.step_mismatch.append({"step": self.steps + 1, "forwards": self._fwd_since, "backwards": self._bwd_since, "line": line})
        self.steps += 1
        self.step_lines[line] += 1
        self._fwd_since = self._bwd_since = 0
        self._group = {id(optimizer)}

    def opt_pre(self, optimizer, args, kwargs):
        self._opt_depth += 1

    def opt_post(self, optimizer, args, kwargs):
        self._opt_depth -= 1
        if self._opt_depth == 0 and not self._suppressed:
            self._count_step(optimizer)

    def scaler_step(self, original):
        def step(scaler, optimizer, *args, **kwargs):
            self._opt_depth += 1  # the optimizer.step() inside (if the scaler takes it) is this step
            try:
                return original(scaler, optimizer, *args, **kwargs)
            finally:
                self._opt_depth -= 1
                if self._opt_depth == 0 and not self._suppressed:
                    self._count_step(optimizer)
        return step

    def backward(self, original):
        def backward(*args, **kwargs):
            if not self._suppressed:
                self._bwd_since += 1
                self.backwards += 1
            return original(*args, **kwargs)
        return backward

    # module hooks
    def fwd_pre(self, module, args):
        import torch

        if self._mod_depth == 0 and not self._suppressed and args:
            x = args[0]
            if isinstance(x, torch.Tensor) and x.dim() == 2 and not x.dtype.is_floating_point and not x.dtype.is_complex:
                self._batch(module, x, evaluation=not torch.is_grad_enabled() or not module.training)
        self._mod_depth += 1

    def fwd_post(self, module, args, output):
        self._mod_depth -= 1

    def _batch(self, module, x, evaluation: bool):
        if evaluation and self._generating():
            self.generation_forwards += 1  # sampling text (model.generate) is not an evaluation
            return
        line = self.caller_line()
        if tuple(x.shape) != BATCH_SHAPE and len(self.bad_shapes) < self.MAX_SAMPLES:
            self.bad_shapes.append([list(x.shape), "evaluation" if evaluation else "training", line])
        if not evaluation:
            self.train_forwards += 1
            self._fwd_since += 1
            self.train_model = module
            return
        self.evals += 1
        self.eval_at_step.append(self.steps)
        if self.eval_events and self.eval_events[-1]["steps"] == self.steps:
            self.eval_events[-1]["batches"] += 1
        else:
            self.eval_events.append({"steps": self.steps, "batches": 1, "line": line})
        self.eval_lines[line] += 1
        self.model = module
        rows = x.detach().to("cpu").numpy()
        if all(self.val_index.contains(r) for r in rows):
            self.eval_sources["val"] += 1
        elif all(self.val_index.contains(r) or self.train_index.contains(r) for r in rows):
            self.eval_sources["train"] += 1
            self.train_eval_line = self.train_eval_line or line
        else:
            self.eval_sources["unknown"] += 1
            self.unknown_eval_line = self.unknown_eval_line or line

    @staticmethod
    def _generating() -> bool:
        f, depth = sys._getframe(3), 0
        while f is not None and depth < 12:
            name = f.f_code.co_name.lower()
            if "generat" in name:  # nanoGPT's model.generate(...)
                return True
            f, depth = f.f_back, depth + 1
        return False

    def install(self):
        import torch
        from torch.amp import grad_scaler
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module

        self._handles = [
            optim_module.register_optimizer_step_pre_hook(self.opt_pre),
            optim_module.register_optimizer_step_post_hook(self.opt_post),
            nn_module.register_module_forward_pre_hook(self.fwd_pre),
            nn_module.register_module_forward_hook(self.fwd_post),
        ]
        # Tensor.backward() calls torch.autograd.backward: counting there sees both spellings
        torch.autograd.backward = self.backward(torch.autograd.backward)
        grad_scaler.GradScaler.step = self.scaler_step(grad_scaler.GradScaler.step)
        try:  # the project's honest-metrics evaluation is the harness's, not the candidate's
            import torchport.evaluate as te

            original = te.val_loss

            def val_loss(*a, **k):
                with self.suppressed():
                    return original(*a, **k)

            te.val_loss = val_loss
        except ImportError:
            pass

    def report(self) -> dict:
        common = lambda c: [ln for ln, _ in c.most_common() if ln is not None]  # noqa: E731
        return {
            "steps": self.steps, "evals": self.evals, "eval_at_step": self.eval_at_step[:1000],
            "eval_events": self.eval_events, "eval_sources": dict(self.eval_sources),
            "train_forwards": self.train_forwards, "backwards": self.backwards, "generation_forwards": self.generation_forwards,
            "step_mismatch": self.step_mismatch, "step_mismatch_count": self.step_mismatch_count,
            "batches_seen": self.evals + self.train_forwards, "bad_shapes": self.bad_shapes,
            "step_lines": common(self.step_lines), "eval_lines": common(self.eval_lines),
            "train_eval_line": self.train_eval_line, "unknown_eval_line": self.unknown_eval_line,
        }


def harness_val_loss(model, val: np.ndarray, device: str, block_size: int = 64, batch_size: int = 8,
                     max_windows: int | None = None) -> tuple[float, int]:
    """Mean cross-entropy over consecutive non-overlapping 64-token windows of val.bin (docs/protocol.md's val_loss),
    from the logits the model returns for model(x, y); (loss, number of windows)."""
    import torch
    from torch.nn import functional as F

    n = (len(val) - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    ids = val.astype(np.int64)
    x = torch.from_numpy(ids[: n * block_size].reshape(n, block_size))
    y = torch.from_numpy(ids[1 : n * block_size + 1].reshape(n, block_size))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            out = model(xb, yb)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape[:2]) != tuple(xb.shape):
                raise TypeError(f"model(x, y) gave logits of shape {getattr(logits, 'shape', type(logits))}; expected (B, T, V)")
            total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), yb.reshape(-1), reduction="sum").item()
            count += yb.numel()
    model.train(was_training)
    return total / count, n


def _load_candidate(source: str, path: str) -> types.ModuleType:
    """The candidate's train_mps, compiled from the (substituted) source under its own file name, so that
    tracebacks and the monitor's line numbers are those of the candidate's file."""
    mod = types.ModuleType("train_mps")
    mod.__file__ = path
    sys.modules["train_mps"] = mod
    exec(compile(source, path, "exec"), mod.__dict__)
    return mod


def _persona(spec: dict):
    from dreamteam.config import GPTConfig, Persona, Recipe

    g = spec["genome"]
    return Persona(g.get("name", "genome"), GPTConfig.from_fields({**g.get("model", {}), "components": g.get("components", ())}),
                   Recipe.from_fields(g.get("recipe", {})), "registry genome")


def _model_facts(model) -> dict:
    out = {"n_params": int(sum(p.numel() for p in model.parameters())),
           "model_class": f"{type(model).__module__}.{type(model).__qualname__}"}
    try:
        out["model_file"] = os.path.realpath(inspect.getfile(type(model)))
    except TypeError:
        out["model_file"] = None
    return out


def _as_number(r):
    """float(r) for a Python or numpy number or a 0-d tensor / array (the original returns best_vloss as a tensor)."""
    if isinstance(r, bool):
        return None
    if isinstance(r, (int, float, np.floating, np.integer)):
        return float(r)
    if type(r).__module__.startswith(("torch", "numpy")) and getattr(r, "ndim", None) == 0:
        try:
            return float(r)
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def run(spec: dict) -> dict:
    cand = Path(spec["dir"])
    if not sys.path or os.path.realpath(sys.path[0] or os.getcwd()) != os.path.realpath(cand):
        sys.path.insert(0, str(cand))
    result: dict = {"status": "failed", "reason": None}
    try:
        import torch

        data_dir = Path(spec["data_dir"])
        val = np.fromfile(data_dir / "val.bin", dtype=np.uint16)
        train_ids = np.fromfile(data_dir / "train.bin", dtype=np.uint16)
    except BaseException as e:  # noqa: BLE001 - the harness's own setup failed: say what
        result["reason"] = f"harness setup: {type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-4000:]
        return result
    mon = Monitor(spec["train_file"], val, train_ids)
    if spec.get("hooks", True):
        mon.install()
    seed = int(spec.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    threads = spec.get("threads")
    if threads:
        torch.set_num_threads(int(threads))

    t0 = time.time()
    try:
        mod = _load_candidate(spec["source"], spec["train_file"])
        fn = getattr(mod, "train", None)
        if not callable(fn):
            raise AttributeError("train_mps.py defines no train()")
        params = inspect.signature(fn).parameters
        kwargs = {"seed": seed} if "seed" in params else {}
        if spec.get("genome") is not None:
            kwargs.update(persona=_persona(spec), progress=False)
        if "out_dir" in params:
            kwargs["out_dir"] = str(Path(spec["work_dir"]) / "runs")
        ret = fn(**kwargs)
    except BaseException as e:  # noqa: BLE001 - every failure of the candidate is a recorded result
        what = "timeout" if isinstance(e, Terminated) else "crash"
        result["reason"] = f"{what}: {type(e).__name__}: {e}" if what == "crash" else "timeout: stopped by the harness"
        result["traceback"] = traceback.format_exc()[-4000:]
        result["completed"] = False
        result["train_s"] = time.time() - t0
        result["dynamic"] = mon.report() if spec.get("hooks", True) else None
        model = mon.model or mon.train_model
        if model is not None:  # which model ran, even when it did not finish
            result.update(_model_facts(model))
        return result
    result["train_s"] = time.time() - t0
    result["completed"] = True
    result["dynamic"] = mon.report() if spec.get("hooks", True) else None
    result["return_repr"] = repr(ret)[:200]
    model = mon.model or mon.train_model
    if model is not None:
        result.update(_model_facts(model))
    nums = [_as_number(r) for r in ret] if isinstance(ret, (tuple, list)) and len(ret) == 2 else [None]
    if any(x is None for x in nums):
        result["reason"] = (f"wrong return: train() returned {repr(ret)[:100]}; expected (best_vloss, elapsed_min), each a "
                            "number or a 0-d tensor")
        return result
    best_vloss, elapsed_min = nums
    result.update(best_vloss=best_vloss, elapsed_min=elapsed_min)
    if not (math.isfinite(best_vloss) and math.isfinite(elapsed_min)):
        result["reason"] = f"non-finite result: best_vloss={best_vloss}, elapsed_min={elapsed_min}"
        return result
    result["status"] = "ok"

    model = mon.model
    if model is None:
        result["val_loss_absent"] = "the harness saw no evaluation forward to take the trained model from"
    else:
        try:
            device = next(model.parameters()).device
            with mon.suppressed():
                vl, n = harness_val_loss(model, val, device, max_windows=spec.get("val_windows"))
            result["val_loss"], result["val_windows"] = vl, n
        except Exception as e:  # noqa: BLE001 - val_loss is the harness's extra; its absence is recorded
            result["val_loss_absent"] = f"{type(e).__name__}: {e}"
    return result


def _exit_with_parent() -> None:
    """The runner lives in its own session (so that a timeout kills its whole group); when the evaluating
    process dies (an interrupted evolve), the runner goes too instead of training on unobserved."""
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _exit_with_parent()

    def terminate(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = run(spec)
    except Terminated:  # after train() returned, in the harness's own val_loss
        result = {"status": "failed", "reason": "timeout: stopped by the harness", "completed": False}
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
