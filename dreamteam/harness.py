"""`dreamteam evaluate DIR`: run one candidate in a fresh subprocess and record its metrics and check report.

A candidate is a folder holding `train_mps.py` and, where it changes the model, `model.py` (or, for the
evolutionary search, `genome.json`: a set of registry components and recipe settings run through the
project's train_mps.train). The subprocess (dreamteam/harness_runner.py) starts with the candidate's folder
first on its import path, so the candidate's own model.py is the one `from model import GPT` imports; the
project's root follows, so a candidate without model.py gets the project's.

Candidates written for the original DreamTeam hard-code its author's data path and `device = 'mps'`.
`substitute()` replaces exactly those two assignments by the configured data folder and device (and, for
tests only, the max_iters literal), keeping every line where it was, and says so in the check report.

Imports neither torch nor jax: the subprocess does.
"""

from __future__ import annotations

import ast
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dreamteam import check, protocol, runs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_NAMES = ("data_dir", "data_path", "data_root", "dataset_dir", "DATA_DIR", "DATA_PATH")
TAIL_CHARS = 3000


class CandidateError(ValueError):
    """A candidate folder that cannot be evaluated at all (no train_mps.py, no genome)."""


def _offsets(source: str):
    starts, pos = [0], 0
    for line in source.encode().splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _node_span(node, starts) -> tuple[int, int]:
    return starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset


def _is_path_expr(node) -> bool:
    """A string constant, or os.path.join / Path(...) of string constants: a hard-coded path."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.path.join", "Path", "pathlib.Path", "join"):
        return all(_is_path_expr(a) for a in node.args)
    return False


def substitute(source: str, data_dir: str | os.PathLike, device: str, max_iters: int | None = None) -> tuple[str, list[dict]]:
    """The candidate's source with its hard-coded data path and `device = 'mps'` replaced by the configured
    ones (and max_iters, for tests only); every line stays where it was. Returns (source, notes)."""
    tree = ast.parse(source)
    starts = _offsets(source)
    edits, notes = [], []
    seen = set()
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Assign)), key=lambda n: (n.lineno, n.col_offset)):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            continue
        name, value = node.targets[0].id, node.value
        if name in seen:
            continue
        if name == "device" and isinstance(value, ast.Constant) and value.value == protocol.DEVICE:
            seen.add(name)
            if device != protocol.DEVICE:
                edits.append((_node_span(value, starts), repr(device)))
                notes.append({"line": node.lineno, "what": "device", "from": ast.unparse(value), "to": repr(device),
                              "message": f"line {node.lineno}: device {ast.unparse(value)} replaced by the configured {device!r}"})
        elif name in DATA_NAMES and _is_path_expr(value):
            seen.add(name)
            new = repr(str(data_dir))
            edits.append((_node_span(value, starts), new))
            notes.append({"line": node.lineno, "what": "data", "from": ast.unparse(value), "to": new,
                          "message": f"line {node.lineno}: data path {ast.unparse(value)} replaced by the configured {new}"})
        elif name == "max_iters" and max_iters is not None and isinstance(value, ast.Constant) and value.value == protocol.MAX_ITERS:
            seen.add(name)
            edits.append((_node_span(value, starts), str(int(max_iters))))
            notes.append({"line": node.lineno, "what": "max_iters", "from": ast.unparse(value), "to": str(max_iters),
                          "message": f"line {node.lineno}: max_iters {protocol.MAX_ITERS} replaced by {max_iters} "
                                     "(test and smoke runs only: not a protocol evaluation)"})
    # paths of train.bin / val.bin written out in full ('/Users/x/data/train.bin', 'data/shakespeare/val.bin')
    if "data" not in {n["what"] for n in notes}:
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith(("/train.bin", "/val.bin")):
                new = repr(os.path.join(str(data_dir), os.path.basename(n.value)))
                edits.append((_node_span(n, starts), new))
                notes.append({"line": n.lineno, "what": "data", "from": repr(n.value), "to": new,
                              "message": f"line {n.lineno}: data file {n.value!r} replaced by {new}"})
    b = source.encode()
    for (s, e), new in sorted(edits, reverse=True):
        b = b[:s] + new.encode() + b[e:]
    out = b.decode()
    assert len(out.splitlines()) == len(source.splitlines())
    return out, notes


def candidate_files(cand_dir: Path) -> dict:
    """Which train_mps.py and model.py a candidate runs with, and whether it is a registry genome."""
    cand_dir = Path(cand_dir)
    genome = cand_dir / "genome.json"
    own_train = cand_dir / "train_mps.py"
    if not own_train.exists() and not genome.exists():
        raise CandidateError(f"{cand_dir} holds neither train_mps.py nor genome.json; a candidate needs one of them")
    own_model = cand_dir / "model.py"
    return {
        "train_file": str((own_train if own_train.exists() else PROJECT_ROOT / "train_mps.py").resolve()),
        "model_file": str((own_model if own_model.exists() else PROJECT_ROOT / "model.py").resolve()),
        "genome": json.loads(genome.read_text()) if genome.exists() and not own_train.exists() else None,
    }


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text[-TAIL_CHARS:]


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def evaluate(cand_dir, *, seed: int = 0, timeout_min: float = 120.0, device: str = "cpu", data_dir=None,
             max_iters: int | None = None, val_windows: int | None = None, threads: int | None = None,
             metrics_name: str = "metrics.json", environ: dict | None = None) -> dict:
    """Run the candidate in cand_dir and write cand_dir/metrics_name; returns the metrics.

    max_iters and val_windows are for tests and smoke runs only: a protocol evaluation leaves them None.
    """
    from dreamteam import data

    cand_dir = Path(cand_dir).resolve()
    files = candidate_files(cand_dir)
    data_dir = data.find_data_dir(data_dir, environ).resolve()  # the command line passes os.environ
    source = Path(files["train_file"]).read_text()
    iters = protocol.MAX_ITERS if max_iters is None else int(max_iters)
    static = check.static_check(source, files["train_file"])
    subs_source, notes = substitute(source, data_dir, device, max_iters)
    if files["genome"] is not None:
        notes.append({"line": None, "what": "genome", "message": "registry genome: the project's train_mps.train with "
                      f"persona components {files['genome'].get('components', [])}"})
    if max_iters is not None and not any(n["what"] == "max_iters" for n in notes):
        static.append(check.Violation("frozen", None, f"max_iters={max_iters} was asked for, but the file has no `max_iters = {protocol.MAX_ITERS}` to set it in"))

    work = cand_dir / ".harness" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    spec = {"dir": str(cand_dir), "train_file": files["train_file"], "source": subs_source, "data_dir": str(data_dir),
            "seed": seed, "genome": files["genome"], "work_dir": str(work), "val_windows": val_windows, "threads": threads}
    spec_path, result_path = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cand_dir), str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env[data.DATA_ENV_VAR] = str(data_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    out_path, err_path = work / "stdout.txt", work / "stderr.txt"
    t0 = time.time()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dreamteam.harness_runner", str(spec_path), str(result_path)],
                                cwd=cand_dir, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_min * 60)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, timed_out = proc.returncode, True
        except BaseException:
            _kill_group(proc)
            raise
    wall_s = time.time() - t0

    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if timed_out:
        status, reason = "failed", f"timeout: killed after {timeout_min:g} min"
    elif not result:
        status, reason = "failed", f"crash: the process exited with code {rc} and wrote no result"
    else:
        status, reason = result["status"], result.get("reason")
    dyn = result.get("dynamic")
    dynamic = check.dynamic_violations(dyn, iters) if dyn is not None and status == "ok" else []
    valid = not static and not dynamic
    best, elapsed = result.get("best_vloss"), result.get("elapsed_min")
    fitness = protocol.fitness(best, elapsed) if status == "ok" else math.inf
    metrics = {
        "dir": str(cand_dir), "status": status, "reason": reason, "valid": valid and status == "ok",
        "best_vloss": best, "elapsed_min": elapsed, "fitness": fitness,
        "val_loss": result.get("val_loss"), "val_loss_absent": None if result.get("val_loss") is not None
        else (result.get("val_loss_absent") or reason or "not measured"),
        "val_windows": result.get("val_windows"),
        "n_params": result.get("n_params"), "model_class": result.get("model_class"), "model_file": result.get("model_file"),
        "train_file": files["train_file"], "seed": seed, "device": device, "data_dir": str(data_dir),
        "max_iters": iters, "protocol_run": max_iters is None and val_windows is None, "wall_s": round(wall_s, 2),
        "return_repr": result.get("return_repr"),
        "check": {"valid": valid, "static": check.as_dicts(static), "dynamic": check.as_dicts(dynamic),
                  "dynamic_run": dyn is not None and status == "ok", "substitutions": notes, "counts": dyn},
        "stdout_tail": _tail(out_path), "stderr_tail": _tail(err_path), "traceback": result.get("traceback"),
    }
    runs.write_json_atomic(cand_dir / metrics_name, metrics)
    return metrics


def rank_key(m: dict) -> tuple:
    """Failed last, then invalid, then by fitness (lower is better)."""
    return (m.get("status") != "ok", not m.get("valid"), m.get("fitness", math.inf))


def format_check(static, dynamic=None, notes=()) -> str:
    lines = []
    for n in notes:
        lines.append(f"  substituted  {n['message']}")
    for v in static:
        v = v if isinstance(v, check.Violation) else check.Violation(**v)
        lines.append(f"  static       {v}")
    for v in dynamic or ():
        v = v if isinstance(v, check.Violation) else check.Violation(**v)
        lines.append(f"  dynamic      {v}")
    return "\n".join(lines)


def main_evaluate(args) -> int:
    try:
        m = evaluate(args.dir, seed=args.seed, timeout_min=args.timeout, device=args.device, data_dir=args.data_dir,
                     max_iters=args.max_iters, val_windows=args.val_windows, environ=os.environ)
    except CandidateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = m["check"]
    print(f"{m['dir']}: {m['status']}{' (' + m['reason'] + ')' if m['reason'] else ''}")
    if m["status"] == "ok":
        vl = f"{m['val_loss']:.4f}" if m["val_loss"] is not None else f"absent ({m['val_loss_absent']})"
        print(f"  best_vloss {m['best_vloss']:.4f}  elapsed_min {m['elapsed_min']:.3f}  fitness {m['fitness']:.4f}  "
              f"val_loss {vl}  n_params {m['n_params']}")
    print(f"  protocol {'kept' if c['valid'] else 'VIOLATED: candidate invalid, ranked last'}")
    text = format_check(c["static"], c["dynamic"], c["substitutions"])
    if text:
        print(text)
    print(f"  metrics in {Path(m['dir']) / 'metrics.json'}")
    return 0 if m["status"] == "ok" and m["valid"] else 1


def main_check(args) -> int:
    """Static check of DIR/train_mps.py (or the project's for a genome), plus the dynamic record of the last
    evaluation (DIR/metrics.json) or, with --run, of a fresh one."""
    if args.run:
        return main_evaluate(args)
    cand = Path(args.dir)
    try:
        files = candidate_files(cand)
    except CandidateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    static = check.static_check(Path(files["train_file"]).read_text(), files["train_file"])
    dynamic, note = [], "dynamic: not run yet (dreamteam evaluate DIR, or dreamteam check DIR --run)"
    mpath = cand / "metrics.json"
    if mpath.exists():
        m = json.loads(mpath.read_text())
        if m["check"].get("dynamic_run"):
            dynamic = m["check"]["dynamic"]
            note = f"dynamic: from {mpath} ({m['max_iters']} iterations{'' if m.get('protocol_run') else ', a shortened test run'})"
        else:
            note = f"dynamic: the last evaluation did not finish ({m['reason']})"
    ok = not static and not dynamic
    print(f"{files['train_file']}: protocol {'kept' if ok else 'VIOLATED'}")
    text = format_check(static, dynamic)
    if text:
        print(text)
    print(f"  {note}")
    return 0 if ok else 1
