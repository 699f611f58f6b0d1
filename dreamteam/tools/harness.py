"""`dreamteam evaluate DIR`: run one candidate in a fresh subprocess and record its metrics and check report.

A candidate is a folder holding `train_mps.py` and, where it changes the model, `model.py` (or, for the
evolutionary search, `genome.json`: a set of registry components and recipe settings run through the
project's train_mps.train). The subprocess (dreamteam/tools/harness_runner.py) starts with the candidate's folder
first on its import path, so the candidate's own model.py is the one `from model import GPT` imports; the
project's root follows, so a candidate without model.py gets the project's.

Candidates written for the original DreamTeam hard-code their author's data paths and `device = 'mps'`.
`substitute()` points every path expression naming train.bin or val.bin at the configured data folder (the
one that holds the two files) and the device at the configured one (and, for tests only, sets the max_iters
literal), keeping every line where it was, and lists each substitution with its line in the check report.
A run is judged on the counts it recorded, whether it finished or not (check.dynamic_violations).

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

from dreamteam import protocol, runs
from dreamteam.tools import check

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # dreamteam/tools/X.py -> the checkout
DATA_NAMES = ("data_dir", "data_path", "data_root", "dataset_dir", "DATA_DIR", "DATA_PATH")
TAIL_CHARS = 3000
DATA_ENV = "DREAMTEAM_DATA"
TERM_GRACE_S = 15  # after a timeout's SIGTERM, how long the runner has to write its counts before SIGKILL


class CandidateError(ValueError):
    """A candidate folder that cannot be evaluated at all (no train_mps.py, no genome)."""


class DataDirError(CandidateError):
    """The configured data folder does not hold train.bin and val.bin."""


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


_JOINS = ("os.path.join", "path.join", "join", "posixpath.join")
_PATHS = ("Path", "pathlib.Path", "PurePath", "PosixPath", "pathlib.PurePath", "pathlib.PosixPath")
_WRAPS = ("os.path.abspath", "os.path.expanduser", "os.path.realpath", "os.path.normpath", "str", "os.fspath")


def _data_file(node) -> tuple[str, bool] | None:
    """(file, is_a_Path) where the expression is a path whose last component is train.bin or val.bin: a literal,
    os.path.join(..., 'shakespeare/train.bin'), Path(d) / 'train.bin', d + '/train.bin', f'{d}/train.bin'."""
    if isinstance(node, ast.Constant):
        f = check._is_data_file(node.value)
        return (f, False) if f else None
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[-1], ast.Constant):
        f = check._is_data_file(node.values[-1].value)
        return (f, False) if f and ("/" in node.values[-1].value or len(node.values) == 1
                                    or node.values[-1].value in protocol.DATA_FILES) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
        got = _data_file(node.right)
        return (got[0], isinstance(node.op, ast.Div)) if got else None
    if isinstance(node, ast.Call) and node.args:
        name = ast.unparse(node.func)
        if name in _JOINS or name in _PATHS:
            got = _data_file(node.args[-1])
            return (got[0], name in _PATHS) if got else None
        if name in _WRAPS and len(node.args) == 1:
            got = _data_file(node.args[0])
            return (got[0], False) if got else None
    return None


def data_paths(tree) -> list[tuple[ast.AST, str, bool]]:
    """Every outermost path expression of the file that names train.bin or val.bin: (node, file, is_a_Path)."""
    out = []

    def visit(n):
        got = _data_file(n) if isinstance(n, ast.expr) else None
        if got:
            out.append((n, *got))
            return
        for c in ast.iter_child_nodes(n):
            visit(c)

    visit(tree)
    return sorted(out, key=lambda t: (t[0].lineno, t[0].col_offset))


def _replacement(text: str, node) -> str:
    """text for node's span, padded so that every line of the file stays where it was."""
    extra = node.end_lineno - node.lineno
    return text if extra == 0 else "(" + text + "\n" * extra + ")"


def substitute(source: str, data_dir: str | os.PathLike, device: str, max_iters: int | None = None) -> tuple[str, list[dict]]:
    """The candidate's source with its data paths and `device = 'mps'` replaced by the configured ones (and
    max_iters, for tests only); every line stays where it was. Returns (source, notes).

    Each path expression naming train.bin or val.bin becomes data_dir/train.bin (val.bin): the data folder is
    the one that holds the two files, whatever subfolders the candidate's author kept them in. A candidate
    that builds the file name at run time (f'{split}.bin') has its data folder assignment (data_dir = '...')
    replaced instead."""
    tree = ast.parse(source)
    starts = _offsets(source)
    edits, notes = [], []
    for node, fname, is_path in data_paths(tree):
        target = os.path.join(str(data_dir), fname)
        new = f"__import__('pathlib').Path({target!r})" if is_path else repr(target)
        edits.append((_node_span(node, starts), _replacement(new, node)))
        notes.append({"line": node.lineno, "what": "data", "from": ast.unparse(node), "to": repr(target), "file": fname,
                      "message": f"line {node.lineno}: data path {ast.unparse(node)} replaced by {target!r}"})
    seen = set()
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Assign)), key=lambda n: (n.lineno, n.col_offset)):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            continue
        name, value = node.targets[0].id, node.value
        if name in seen:
            continue
        if name == "device" and check._device_ok(value):
            seen.add(name)
            if device != protocol.DEVICE:
                where = value.args[0] if isinstance(value, ast.Call) else value  # torch.device('mps'): its argument
                edits.append((_node_span(where, starts), _replacement(repr(device), where)))
                notes.append({"line": node.lineno, "what": "device", "from": ast.unparse(value), "to": repr(device),
                              "message": f"line {node.lineno}: device {ast.unparse(value)} replaced by the configured {device!r}"})
        elif name in DATA_NAMES and _is_path_expr(value) and not any(n["what"] == "data" for n in notes):
            seen.add(name)  # the file names are built at run time: point the folder at the data
            new = repr(str(data_dir))
            edits.append((_node_span(value, starts), _replacement(new, value)))
            notes.append({"line": node.lineno, "what": "data", "from": ast.unparse(value), "to": new,
                          "message": f"line {node.lineno}: data folder {ast.unparse(value)} replaced by the configured {new}"})
        elif name == "max_iters" and max_iters is not None and isinstance(value, ast.Constant) and value.value == protocol.MAX_ITERS:
            seen.add(name)
            edits.append((_node_span(value, starts), str(int(max_iters))))
            notes.append({"line": node.lineno, "what": "max_iters", "from": ast.unparse(value), "to": str(max_iters),
                          "message": f"line {node.lineno}: max_iters {protocol.MAX_ITERS} replaced by {max_iters} "
                                     "(test and smoke runs only: not a protocol evaluation)"})
    b = source.encode()
    for (s, e), new in sorted(edits, reverse=True):
        b = b[:s] + new.encode() + b[e:]
    out = b.decode()
    assert len(out.splitlines()) == len(source.splitlines())
    return out, notes


def check_data_dir(data_dir: Path, notes: list[dict]) -> None:
    """One clear error when the data folder lacks train.bin or val.bin, naming what the candidate asked for."""
    missing = [f for f in protocol.DATA_FILES if not (Path(data_dir) / f).is_file()]
    if not missing:
        return
    f = missing[0]
    asked = [n for n in notes if n.get("file") == f] or [n for n in notes if n["what"] == "data"]
    what = (f"the candidate reads {asked[0]['from']} (line {asked[0]['line']}), which the harness points at {Path(data_dir) / f}"
            if asked else f"the harness reads {Path(data_dir) / f}")
    hint = sorted(str(p.parent) for p in Path(data_dir).glob(f"*/{f}")) if Path(data_dir).is_dir() else []
    where = f"; {f} is in {hint[0]}" if hint else ""
    state = "does not exist" if not Path(data_dir).exists() else f"holds no {f}"
    raise DataDirError(f"the data folder {data_dir} (--data-dir, else ${DATA_ENV}) {state}: {what}{where}; "
                       "give the folder that holds train.bin and val.bin")


def candidate_files(cand_dir: Path) -> dict:
    """Which train_mps.py and model.py a candidate runs with, and whether it is a registry genome."""
    cand_dir = Path(cand_dir)
    if not cand_dir.exists():
        raise CandidateError(f"{cand_dir} does not exist; give a candidate folder (holding train_mps.py, or genome.json)")
    if not cand_dir.is_dir():
        raise CandidateError(f"{cand_dir} is a file, not a candidate folder; give the folder that holds it "
                             f"({cand_dir.parent})" if cand_dir.name in ("train_mps.py", "model.py", "genome.json")
                             else f"{cand_dir} is a file, not a candidate folder (holding train_mps.py, or genome.json)")
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


def _kill_group(proc, grace_s: float = 0.0):
    """SIGTERM first (the runner then writes the counts it has), SIGKILL after grace_s."""
    try:
        if grace_s > 0:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def evaluate(cand_dir, *, seed: int = 0, timeout_min: float = 120.0, device: str = "cpu", data_dir=None,
             max_iters: int | None = None, val_windows: int | None = None, threads: int | None = None,
             metrics_name: str = "metrics.json", environ: dict | None = None, hooks: bool = True) -> dict:
    """Run the candidate in cand_dir and write cand_dir/metrics_name; returns the metrics.

    max_iters and val_windows are for tests and smoke runs only: a protocol evaluation leaves them None.
    hooks=False runs the candidate without the protocol monitor (a bare run, to measure what the hooks cost):
    no dynamic check, the record says so.
    """
    from dreamteam import data

    cand_dir = Path(cand_dir).resolve()
    files = candidate_files(cand_dir)
    data_dir = data.find_data_dir(data_dir, environ).resolve()  # the command line passes os.environ
    source = Path(files["train_file"]).read_text()
    iters = protocol.MAX_ITERS if max_iters is None else int(max_iters)
    static = check.static_check(source, files["train_file"])
    try:
        subs_source, notes = substitute(source, data_dir, device, max_iters)
    except SyntaxError:
        subs_source, notes = source, []  # the static check reports it; the run records the error
    check_data_dir(data_dir, notes)
    if files["genome"] is not None:
        notes.append({"line": None, "what": "genome", "message": "registry genome: the project's train_mps.train with "
                      f"persona components {files['genome'].get('components', [])}"})
    if max_iters is not None and not any(n["what"] == "max_iters" for n in notes):
        static.append(check.Violation("frozen", None, f"max_iters={max_iters} was asked for, but the file has no `max_iters = {protocol.MAX_ITERS}` to set it in"))

    work = cand_dir / ".harness" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    spec = {"dir": str(cand_dir), "train_file": files["train_file"], "source": subs_source, "data_dir": str(data_dir),
            "seed": seed, "genome": files["genome"], "work_dir": str(work), "val_windows": val_windows, "threads": threads,
            "hooks": hooks}
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
        proc = subprocess.Popen([sys.executable, "-m", "dreamteam.tools.harness_runner", str(spec_path), str(result_path)],
                                cwd=cand_dir, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_min * 60)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc, TERM_GRACE_S)
            rc, timed_out = proc.returncode, True
        except BaseException:
            _kill_group(proc)
            raise
    wall_s = time.time() - t0

    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if timed_out:
        status, reason = "failed", f"timeout: killed after {timeout_min:g} min"
    elif not result:
        last = [ln for ln in _tail(err_path).splitlines() if ln.strip()]
        status, reason = "failed", f"crash: the process exited with code {rc} and wrote no result" + (f": {last[-1].strip()}" if last else "")
    else:
        status, reason = result["status"], result.get("reason")
    dyn = result.get("dynamic")
    completed = bool(result.get("completed", status == "ok")) and not timed_out
    # judged on every run that recorded counts: a run that did not finish is incomplete, never clean
    dynamic = check.dynamic_violations(dyn, iters, completed=completed, reason=None if completed else reason) if dyn is not None else []
    valid = not static and not dynamic and status == "ok" and dyn is not None
    best, elapsed = result.get("best_vloss"), result.get("elapsed_min")
    fitness = protocol.fitness(best, elapsed) if status == "ok" else math.inf
    metrics = {
        "dir": str(cand_dir), "status": status, "reason": reason, "valid": valid,
        "best_vloss": best, "elapsed_min": elapsed, "fitness": fitness,
        "val_loss": result.get("val_loss"), "val_loss_absent": None if result.get("val_loss") is not None
        else (result.get("val_loss_absent") or reason or "not measured"),
        "val_windows": result.get("val_windows"),
        "n_params": result.get("n_params"), "model_class": result.get("model_class"), "model_file": result.get("model_file"),
        "train_file": files["train_file"], "seed": seed, "device": device, "data_dir": str(data_dir),
        "max_iters": iters, "protocol_run": max_iters is None and val_windows is None, "wall_s": round(wall_s, 2),
        "train_s": result.get("train_s"), "hooks": hooks, "return_repr": result.get("return_repr"),
        "check": {"valid": valid, "static": check.as_dicts(static), "dynamic": check.as_dicts(dynamic),
                  "dynamic_run": dyn is not None, "completed": completed, "substitutions": notes, "counts": dyn},
        "stdout_tail": _tail(out_path), "stderr_tail": _tail(err_path), "traceback": result.get("traceback"),
    }
    runs.write_json_atomic(cand_dir / metrics_name, metrics)
    return metrics


def rank_key(m: dict) -> tuple:
    """Failed last, then invalid, then by fitness (lower is better)."""
    return (m.get("status") != "ok", not m.get("valid"), m.get("fitness", math.inf))


def _violation(v) -> check.Violation:
    """A violation, from its record (evolve's aggregated records add the seed)."""
    if isinstance(v, check.Violation):
        return v
    seed = f" (seed {v['seed']})" if v.get("seed") is not None else ""
    return check.Violation(v["kind"], v.get("line"), v["message"] + seed)


def format_check(static, dynamic=None, notes=()) -> str:
    lines = []
    for n in notes:
        lines.append(f"  substituted  {n['message']}")
    for v in static:
        lines.append(f"  static       {_violation(v)}")
    for v in dynamic or ():
        lines.append(f"  dynamic      {_violation(v)}")
    return "\n".join(lines)


def _verdict(static, dynamic, dynamic_run: bool, failed: bool = False) -> str:
    """A failed run is never 'kept': it is violated, incomplete, or not shown."""
    kinds = {(v["kind"] if isinstance(v, dict) else v.kind) for v in list(static) + list(dynamic)}
    if kinds - {"incomplete"}:
        return "VIOLATED: candidate invalid, ranked last"
    if "incomplete" in kinds:
        return "not shown: the run did not finish (static check passed)"
    if failed:
        return "not shown: the run failed (static check passed; no violation in its counts)"
    return "kept" if dynamic_run else "kept by the static check; dynamic not run"


def main_evaluate(args) -> int:
    try:
        m = evaluate(args.dir, seed=args.seed, timeout_min=args.timeout, device=args.device, data_dir=args.data_dir,
                     max_iters=args.max_iters, val_windows=args.val_windows, environ=os.environ,
                     hooks=not getattr(args, "no_hooks", False))
    except CandidateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = m["check"]
    print(f"{m['dir']}: {m['status']}{' (' + m['reason'] + ')' if m['reason'] else ''}")
    if m["status"] == "ok":
        vl = f"{m['val_loss']:.4f}" if m["val_loss"] is not None else f"absent ({m['val_loss_absent']})"
        print(f"  best_vloss {m['best_vloss']:.4f}  elapsed_min {m['elapsed_min']:.3f}  fitness {m['fitness']:.4f}  "
              f"val_loss {vl}  n_params {m['n_params']}")
    elif m.get("traceback"):
        last = [ln for ln in m["traceback"].splitlines() if ln.strip()]
        print(f"  error: {last[-1].strip()}" if last else "")
    print(f"  protocol {_verdict(c['static'], c['dynamic'], c['dynamic_run'], m['status'] != 'ok')}"
          + ("" if m["hooks"] else " (a bare run, --no-hooks: not checked dynamically)"))
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
    dynamic, dynamic_run, failed = [], False, False
    note = "dynamic: not run yet (dreamteam evaluate DIR, or dreamteam check DIR --run)"
    mpath = cand / "metrics.json"
    if mpath.exists():
        m = json.loads(mpath.read_text())
        failed = m.get("status") != "ok"
        if m["check"].get("counts") is not None or m.get("per_seed"):  # evolve's record: every seed's run, aggregated
            dynamic, dynamic_run = m["check"]["dynamic"], True
            run = "" if m.get("protocol_run") else ", a shortened test run"
            seeds = f", seeds {m['seeds']}" if m.get("seeds") else ""
            failed = f"; the run failed: {m.get('reason')}" if m.get("status") != "ok" else ""
            note = f"dynamic: from {mpath} ({m['max_iters']} iterations{seeds}{run}{failed})"
        else:
            note = f"dynamic: the last evaluation recorded no counts ({m.get('reason')})"
    ok = not static and not dynamic and dynamic_run and not failed
    print(f"{files['train_file']}: protocol {_verdict(static, dynamic, dynamic_run, failed)}")
    text = format_check(static, dynamic)
    if text:
        print(text)
    print(f"  {note}")
    if not static and not dynamic and not dynamic_run and not failed:
        return 0  # nothing against it yet: the static half passed
    return 0 if ok else 1
