"""The protocol checker: proves that a candidate `train_mps.py` keeps the frozen DreamTeam protocol.

Two halves (docs/loop.md says what each can and cannot see):

- `static_check(source)` parses the file and checks, with the line of every violation:
  the frozen names keep their literal values (batch_size 8, block_size 64, max_iters 10001,
  eval_interval 100, n_layer 4, n_head 4, n_embd 32, device 'mps') and are not reassigned later;
  train.bin / val.bin are loaded as uint16 (or through the project's loader `data.load`);
  the training loop is `for it in range(max_iters)` without `break` or `return` in it, and steps the
  optimizer unconditionally; the evaluation condition is `it % eval_interval == 0`, and the evaluation
  block draws no training data; `train()` returns `best_vloss, elapsed_min`.
- `dynamic_violations(report, expected_iters)` judges what the harness runner
  (dreamteam/harness_runner.py) counted while train() ran: optimizer steps, evaluations, the step at
  which each evaluation came, where each evaluation batch came from (validation or training data) and
  the batch shapes.

Imports neither torch nor jax.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass

from dreamteam import protocol

FROZEN = {
    "batch_size": protocol.BATCH_SIZE,
    "block_size": protocol.BLOCK_SIZE,
    "max_iters": protocol.MAX_ITERS,
    "eval_interval": protocol.EVAL_INTERVAL,
    "n_layer": protocol.N_LAYER,
    "n_head": protocol.N_HEAD,
    "n_embd": protocol.N_EMBD,
    "device": protocol.DEVICE,
}
RETURN_NAMES = ("best_vloss", "elapsed_min")


@dataclass(frozen=True)
class Violation:
    kind: str  # frozen | data | loop | eval | return | steps | evals | eval_data | shape | run
    line: int | None  # line in train_mps.py, None where the rule has no single line
    message: str  # a plain sentence

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def _train_function(tree: ast.Module) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train"), None)


def _walk_no_nested(node):
    """ast.walk that does not enter nested function or class definitions."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(n))


def _none_default_params(fn: ast.FunctionDef) -> set[str]:
    """Parameters of train() whose default is None: a protocol call, train() with no arguments, leaves them unset."""
    args = fn.args
    out = set()
    pos = args.posonlyargs + args.args
    for a, d in zip(pos[len(pos) - len(args.defaults):], args.defaults):
        if isinstance(d, ast.Constant) and d.value is None:
            out.add(a.arg)
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        if isinstance(d, ast.Constant) and d.value is None:
            out.add(a.arg)
    return out


def _assigned_names(node) -> list[tuple[str, ast.AST]]:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    else:
        return []
    out = []
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                out.append((n.id, node))
    return out


def _parents(tree) -> dict:
    parents = {}
    for p in ast.walk(tree):
        for c in ast.iter_child_nodes(p):
            parents[c] = p
    return parents


def _guarded_by_override(node, parents, override_params) -> bool:
    """Is `node` inside `if P is not None:` with P a None-default parameter of train()?"""
    p = parents.get(node)
    while p is not None:
        if isinstance(p, ast.If):
            t = p.test
            if (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id in override_params
                    and len(t.ops) == 1 and isinstance(t.ops[0], ast.IsNot)
                    and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value is None):
                return True
        p = parents.get(p)
    return False


def _is_device_fallback(node: ast.AST, module_funcs: set[str]) -> bool:
    """`device = resolve_device(...)` with resolve_device defined in the file: the protocol's MPS fallback."""
    v = getattr(node, "value", None)
    return (isinstance(node, ast.Assign) and isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
            and v.func.id == "resolve_device" and "resolve_device" in module_funcs)


def _check_frozen(tree, fn, scopes, v: list[Violation]) -> None:
    parents = _parents(tree)
    override_params = _none_default_params(fn) if fn else set()
    module_funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    seen: dict[str, int] = {}
    for scope in scopes:
        nodes = sorted((n for n in _walk_no_nested(scope) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))),
                       key=lambda n: (n.lineno, n.col_offset))
        for node in nodes:
            for name, stmt in _assigned_names(node):
                if name not in FROZEN:
                    continue
                want = FROZEN[name]
                value = getattr(stmt, "value", None)
                if name not in seen:
                    seen[name] = stmt.lineno
                    ok = (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Constant)
                          and type(value.value) is type(want) and value.value == want)
                    if not ok:
                        got = ast.unparse(value) if value is not None else "?"
                        v.append(Violation("frozen", stmt.lineno, f"the frozen {name} must be the literal {want!r}; it is set to {got}"))
                elif _guarded_by_override(stmt, parents, override_params):
                    continue  # a test/smoke-run override that train() without arguments never applies
                elif name == "device" and _is_device_fallback(stmt, module_funcs):
                    continue  # the protocol's fallback where MPS is missing
                else:
                    got = ast.unparse(stmt)
                    v.append(Violation("frozen", stmt.lineno, f"the frozen {name} is changed after line {seen[name]}: `{got}`"))
    for name, want in FROZEN.items():
        if name not in seen:
            v.append(Violation("frozen", None, f"the frozen {name} = {want!r} is never set"))


def _strings(node) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _check_data(tree, v: list[Violation]) -> None:
    """train.bin and val.bin loaded as uint16 token ids, or through the project's loader data.load."""
    loaded = {"train.bin": [], "val.bin": []}
    project_loader = False
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        fname = ast.unparse(f)
        if fname in ("data.load", "dreamteam.data.load"):
            project_loader = True
            continue
        if fname.split(".")[-1] not in ("memmap", "fromfile", "load", "frombuffer"):
            continue
        names = [s for s in _strings(n) if s.endswith(("train.bin", "val.bin"))]
        if not names:
            continue
        dtype = next((k.value for k in n.keywords if k.arg == "dtype"), None)
        if dtype is None and len(n.args) >= 2:
            dtype = n.args[1]
        dname = ast.unparse(dtype) if dtype is not None else None
        for s in names:
            key = "train.bin" if s.endswith("train.bin") else "val.bin"
            loaded[key].append(n.lineno)
            if dname is None or dname.split(".")[-1] not in ("uint16", "'uint16'", '"uint16"'):
                v.append(Violation("data", n.lineno, f"{key} must be read as uint16 token ids; it is read with dtype {dname}"))
    if project_loader:
        return
    missing = [k for k, lines in loaded.items() if not lines]
    if missing:
        v.append(Violation("data", None, f"the data loading is not the protocol's: no uint16 read of {' and '.join(missing)} found "
                                         "(np.memmap / np.fromfile of train.bin and val.bin, or dreamteam's data.load)"))


def _loop_var(loop: ast.For) -> str | None:
    return loop.target.id if isinstance(loop.target, ast.Name) else None


def _is_range_max_iters(call) -> bool:
    """range(max_iters), possibly wrapped: tqdm(range(max_iters), ...)."""
    if not isinstance(call, ast.Call):
        return False
    if isinstance(call.func, ast.Name) and call.func.id == "range":
        return len(call.args) == 1 and isinstance(call.args[0], ast.Name) and call.args[0].id == "max_iters"
    return any(_is_range_max_iters(a) for a in call.args)


def _eval_test_kind(test, var: str) -> str | None:
    """'ok' for `var % eval_interval == 0` (or % 100), optionally `or var == max_iters - 1`; 'bad' for another
    test on `var % ...`; None when the test has nothing to do with the evaluation interval."""

    def is_mod(e):
        return (isinstance(e, ast.BinOp) and isinstance(e.op, ast.Mod) and isinstance(e.left, ast.Name) and e.left.id == var)

    def is_eval_mod(e):
        return (is_mod(e) and ((isinstance(e.right, ast.Name) and e.right.id == "eval_interval")
                               or (isinstance(e.right, ast.Constant) and e.right.value == protocol.EVAL_INTERVAL)))

    def is_exact(e):
        return (isinstance(e, ast.Compare) and len(e.ops) == 1 and isinstance(e.ops[0], ast.Eq) and is_eval_mod(e.left)
                and isinstance(e.comparators[0], ast.Constant) and e.comparators[0].value == 0)

    def is_last(e):
        return (isinstance(e, ast.Compare) and len(e.ops) == 1 and isinstance(e.ops[0], ast.Eq)
                and isinstance(e.left, ast.Name) and e.left.id == var and ast.unparse(e.comparators[0]) == "max_iters - 1")

    if is_exact(test):
        return "ok"
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or) and len(test.values) == 2:
        a, b = test.values
        if (is_exact(a) and is_last(b)) or (is_exact(b) and is_last(a)):
            return "ok"  # iteration 10000 is already a multiple of 100: the same 101 evaluations
    if any(is_mod(n) and ("eval_interval" in ast.unparse(n.right) or ast.unparse(n.right) == str(protocol.EVAL_INTERVAL))
           for n in ast.walk(test)):
        return "bad"
    return None


def _is_optimizer_step(call: ast.Call) -> bool:
    """optimizer.step() (any receiver whose name says optim/opt) or a helper named like optimizer_step(...)."""
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr == "step":
        recv = ast.unparse(f.value).lower()
        return "optim" in recv or recv.split(".")[-1] in ("opt", "optim")
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return "step" in name.lower() and "optim" in name.lower()


def _check_loop(fn, v: list[Violation]) -> None:
    loops = [n for n in _walk_no_nested(fn) if isinstance(n, ast.For) and _is_range_max_iters(n.iter)]
    if not loops:
        v.append(Violation("loop", fn.lineno, "no training loop `for it in range(max_iters)` in train()"))
        return
    loop = loops[0]
    var = _loop_var(loop)

    # break / return inside the loop (a break of a nested loop is that loop's business)
    def scan(body, depth):
        for stmt in body:
            for n in [stmt, *_walk_shallow(stmt)]:
                if isinstance(n, ast.Break) and depth(n) == 0:
                    v.append(Violation("loop", n.lineno, "`break` can leave the training loop before max_iters optimizer steps"))
                elif isinstance(n, ast.Return):
                    v.append(Violation("loop", n.lineno, "`return` inside the training loop can end training before max_iters steps"))

    parents = _parents(loop)

    def nested_loop_depth(n):
        d, p = 0, parents.get(n)
        while p is not None and p is not loop:
            if isinstance(p, (ast.For, ast.While, ast.AsyncFor)):
                d += 1
            p = parents.get(p)
        return d

    scan(loop.body, nested_loop_depth)

    # the optimizer must step on every iteration: a step call under an `if` is gradient accumulation or skipping
    for n in _walk_no_nested(loop):
        if isinstance(n, ast.Call) and _is_optimizer_step(n):
            p = parents.get(n)
            while p is not None and p is not loop:
                if isinstance(p, ast.If) and _eval_test_kind(p.test, var) != "ok":
                    v.append(Violation("loop", n.lineno, f"the optimizer step is conditional (`if {ast.unparse(p.test)}`, line {p.lineno}): "
                                                         "every iteration must be one optimizer step"))
                    break
                p = parents.get(p)

    evals = [(n, _eval_test_kind(n.test, var)) for n in _walk_no_nested(loop) if isinstance(n, ast.If)]
    evals = [(n, k) for n, k in evals if k]
    if not evals:
        v.append(Violation("eval", loop.lineno, f"no evaluation condition `{var} % eval_interval == 0` in the training loop"))
    for n, k in evals:
        if k == "bad":
            v.append(Violation("eval", n.lineno, f"the evaluation condition must be `{var} % eval_interval == 0` (every 100 iterations); "
                                                 f"it is `{ast.unparse(n.test)}`"))
            continue
        for m in [x for stmt in n.body for x in [stmt, *_walk_shallow(stmt)]]:
            if (isinstance(m, ast.Call) and m.args and isinstance(m.args[0], ast.Constant)
                    and m.args[0].value == "train"):
                v.append(Violation("eval", m.lineno, f"the evaluation draws a training batch (`{ast.unparse(m)}`): it must use validation data"))
            elif isinstance(m, ast.Name) and m.id == "train_data" and isinstance(m.ctx, ast.Load):
                v.append(Violation("eval", m.lineno, "the evaluation reads train_data: it must use validation data"))


def _walk_shallow(node):
    """Children of node, recursively, not entering nested functions (for loop bodies)."""
    return _walk_no_nested(node)


def _check_return(fn, v: list[Violation]) -> None:
    returns = [n for n in _walk_no_nested(fn) if isinstance(n, ast.Return)]
    if not returns:
        v.append(Violation("return", fn.lineno, "train() returns nothing; it must return best_vloss, elapsed_min"))

    def plain(e):
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "float" and len(e.args) == 1:
            e = e.args[0]
        return e.id if isinstance(e, ast.Name) else None

    for r in returns:
        ok = isinstance(r.value, ast.Tuple) and tuple(plain(e) for e in r.value.elts) == RETURN_NAMES
        if not ok:
            got = ast.unparse(r.value) if r.value is not None else "nothing"
            v.append(Violation("return", r.lineno, f"train() must return `best_vloss, elapsed_min`; it returns `{got}`"))


def static_check(source: str, filename: str = "train_mps.py") -> list[Violation]:
    """Every violation of the frozen protocol that can be read from the source of train_mps.py."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as e:
        return [Violation("syntax", e.lineno, f"{filename} does not parse: {e.msg}")]
    v: list[Violation] = []
    fn = _train_function(tree)
    if fn is None:
        v.append(Violation("return", None, "there is no top-level function train()"))
        _check_frozen(tree, None, [tree], v)
        _check_data(tree, v)
        return v
    _check_frozen(tree, fn, [tree, fn] if _module_sets_frozen(tree) else [fn], v)
    _check_data(tree, v)
    _check_loop(fn, v)
    _check_return(fn, v)
    return sorted(set(v), key=lambda x: (x.line or 0, x.kind, x.message))


def _module_sets_frozen(tree) -> bool:
    return any(name in FROZEN for n in tree.body for name, _ in _assigned_names(n))


def expected_evaluations(max_iters: int, eval_interval: int = protocol.EVAL_INTERVAL) -> int:
    """Evaluations at it % eval_interval == 0 for it in range(max_iters): 101 for 10001."""
    return len(range(0, max_iters, eval_interval))


def dynamic_violations(dyn: dict, max_iters: int = protocol.MAX_ITERS) -> list[Violation]:
    """Judge the counts the harness runner recorded while train() ran (harness_runner.Monitor.report())."""
    v: list[Violation] = []
    line = lambda key: (dyn.get(key) or [None])[0]  # noqa: E731
    steps, evals = dyn["steps"], dyn["evals"]
    if steps != max_iters:
        v.append(Violation("steps", line("step_lines"), f"train() took {steps} optimizer steps; the protocol takes exactly {max_iters}"))
    want = expected_evaluations(max_iters)
    if evals != want:
        v.append(Violation("evals", line("eval_lines"), f"train() evaluated {evals} times; the protocol evaluates {want} times (every {protocol.EVAL_INTERVAL} iterations)"))
    expected_at = [protocol.EVAL_INTERVAL * k for k in range(want)]
    at = dyn.get("eval_at_step", [])
    bad = [(k, s) for k, s in enumerate(at) if k < len(expected_at) and s != expected_at[k]]
    if bad:
        k, s = bad[0]
        v.append(Violation("evals", line("eval_lines"), f"evaluation {k} came after {s} optimizer steps, not {expected_at[k]}: evaluations must come every {protocol.EVAL_INTERVAL} iterations"))
    src = dyn.get("eval_sources", {})
    if src.get("train", 0):
        v.append(Violation("eval_data", dyn.get("train_eval_line"), f"{src['train']} evaluation batch(es) came from the training data; every evaluation batch must come from val.bin"))
    if src.get("unknown", 0):
        v.append(Violation("eval_data", dyn.get("unknown_eval_line"), f"{src['unknown']} evaluation batch(es) match no window of val.bin; every evaluation batch must come from val.bin"))
    if dyn.get("bad_shapes"):
        shape, where, ln = dyn["bad_shapes"][0]
        v.append(Violation("shape", ln, f"a {where} batch has shape {shape}; the protocol's batches are {protocol.BATCH_SIZE} x {protocol.BLOCK_SIZE}"))
    if dyn.get("batches_seen", 1) == 0:
        v.append(Violation("run", None, "no batch of token ids reached a torch module: the harness could not observe training"))
    return v


def as_dicts(violations) -> list[dict]:
    return [asdict(x) for x in violations]
