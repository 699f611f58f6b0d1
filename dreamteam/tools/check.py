"""The protocol checker: does a candidate's `train_mps.py` keep the frozen DreamTeam protocol (dreamteam/protocol.py)?

Two halves (docs/loop.md says what each sees):

- `static_check(source)` reads the file's syntax tree. It finds train() and its training loop (the loop that
  takes the optimizer step), and walks that loop statement by statement, following calls into helpers
  defined in train() or at module level (with their arguments bound: a helper's `step % 100` is the loop's
  `it % 100` when it is called as `helper(it)`). Every optimizer step, backward pass, model forward, batch
  draw and loop exit it meets is recorded with the conditions, inner loops and `no_grad` blocks around it;
  the rules then read those records. Each violation carries its line and a sentence naming what was found.
- `dynamic_violations(counts, max_iters)` judges what the harness runner (dreamteam/tools/harness_runner.py)
  counted while train() ran: optimizer steps, the training forwards and backward passes between them, and
  each evaluation (the steps before it, its batches, their shapes and where their rows came from).

Imports neither torch nor jax.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field

from dreamteam import protocol

FROZEN = protocol.FROZEN_LITERALS
OPTIONAL_FROZEN = protocol.OPTIONAL_FROZEN
RETURN_NAMES = protocol.RETURN_NAMES
BATCH_SHAPE = (protocol.BATCH_SIZE, protocol.BLOCK_SIZE)
HELPER_DEPTH = 6  # how deep calls into helpers are followed
_IT = "__it__"
_BUILTINS = set(dir(__import__("builtins")))  # the training loop's variable, after the names bound to it are substituted


@dataclass(frozen=True)
class Violation:
    kind: str  # static: frozen | data | loop | accumulation | eval | return | syntax; dynamic: steps | evals |
    #            accumulation | eval_data | shape | incomplete | run
    line: int | None  # line in train_mps.py, None where the rule has no single line
    message: str  # a plain sentence

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


# --------------------------------------------------------------------------------------------- helpers

def _walk_no_nested(node):
    """ast.walk that does not enter nested function or class definitions."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(n))


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


def _dotted(node) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - a node ast cannot print is no name
        return ""


def _last(node) -> str:
    return _dotted(node).split(".")[-1].split("(")[0]


def _src(node) -> str:
    s = _dotted(node)
    return s if len(s) <= 80 else s[:77] + "..."


def _is_data_file(s) -> str | None:
    """'train.bin' / 'val.bin' where the string's last path component is one of them."""
    if isinstance(s, str):
        base = s.replace("\\", "/").rsplit("/", 1)[-1]
        if base in protocol.DATA_FILES:
            return base
    return None


class _Subst(ast.NodeTransformer):
    """Replace names by bound expressions (a helper's parameters by the caller's arguments)."""

    def __init__(self, env: dict):
        self.env = env

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id in self.env:
            return ast.copy_location(self.env[node.id], node)
        return node


def _substitute(expr, env: dict):
    if not env or expr is None:
        return expr
    import copy

    return _Subst(env).visit(copy.deepcopy(expr))


def _names(expr) -> set[str]:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)} if expr is not None else set()


def _has_call(expr) -> bool:
    return any(isinstance(n, ast.Call) and _last(n.func) not in ("is_available", "is_enabled", "isinstance", "hasattr")
               for n in ast.walk(expr))


# ------------------------------------------------------------------------------------- the file's facts

class _Facts:
    """What the whole file says about names: constants, models, optimizers, grad scalers, training data."""

    def __init__(self, tree: ast.Module, fn: ast.FunctionDef | None):
        self.tree, self.fn = tree, fn
        self.parents = _parents(tree)
        self.module_funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.local_funcs = {}
        if fn is not None:
            for n in ast.walk(fn):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not fn:
                    self.local_funcs.setdefault(n.name, n)
        # a name bound once to a helper, or to a choice of one (`step = GraphStep(...) if graph else eager_step`):
        # a call of it is followed into the helper
        self.aliases = {}
        bound: dict[str, list] = {}
        for n in _walk_no_nested(fn) if fn is not None else ():
            for name, st in _assigned_names(n):
                bound.setdefault(name, []).append(st)
        for name, sts in bound.items():
            value = getattr(sts[0], "value", None) if len(sts) == 1 else None
            choices = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
            helpers = [self.local_funcs.get(c.id) or self.module_funcs.get(c.id) for c in choices if isinstance(c, ast.Name)]
            helpers = [h for h in helpers if h is not None]
            if len(helpers) == 1:
                self.aliases[name] = helpers[0]
        model_imports = set()
        nn_classes = set()
        self.imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                         for a in n.names}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module == "model":
                model_imports |= {a.asname or a.name for a in n.names}
            if isinstance(n, ast.ClassDef) and any("Module" in _dotted(b) or _dotted(b) in model_imports for b in n.bases):
                nn_classes.add(n.name)
        model_ctors = {m for m in model_imports | nn_classes if not m.endswith("Config")}
        # constants: a name assigned once (or a frozen name, by its first assignment) to a literal
        assigns: dict[str, list] = {}
        scopes = [tree] + ([fn] if fn is not None else [])
        for scope in scopes:
            for n in _walk_no_nested(scope):
                for name, stmt in _assigned_names(n):
                    assigns.setdefault(name, []).append(stmt)
        for n in ast.walk(tree):  # loop targets and parameters are assignments too
            if isinstance(n, (ast.For, ast.comprehension)):
                for t in ast.walk(n.target):
                    if isinstance(t, ast.Name):
                        assigns.setdefault(t.id, []).append(n if isinstance(n, ast.For) else t)
        self.assigns = assigns
        self.consts: dict[str, object] = {}
        for _ in range(3):  # a constant may be defined from another (eval_every = eval_interval)
            for name, stmts in assigns.items():
                first = min(stmts, key=lambda s: (s.lineno, s.col_offset))
                if (len(stmts) == 1 or name in FROZEN or name in OPTIONAL_FROZEN) and isinstance(first, (ast.Assign, ast.AnnAssign)):
                    v = self.const_value(first.value, depth=1)
                    if v is not None:
                        self.consts[name] = v
        # models, optimizers, grad scalers and the training data, by what they were assigned from
        self.models, self.optims, self.scalers, self.train_data = set(), set(), set(), set()
        stmts = sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))), key=lambda n: (n.lineno, n.col_offset))
        for _ in range(2):  # twice: a name may be defined from one assigned later in the file (helpers)
            for st in stmts:
                value = st.value
                if value is None:
                    continue
                for name, _s in _assigned_names(st):
                    self._classify(name, value, model_ctors)
        for n in ast.walk(tree):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and "model" in n.id.lower() and n.id not in self.module_funcs:
                self.models.add(n.id)

    def _classify(self, name, value, model_ctors):
        low = name.lower()
        calls = [c for c in ast.walk(value) if isinstance(c, ast.Call)]
        fnames = [_dotted(c.func) for c in calls]
        if any(f.split(".")[-1] in model_ctors or f.split(".")[-1] in ("compile", "deepcopy", "AveragedModel", "DataParallel",
                                                                     "DistributedDataParallel") and _names(value) & self.models
               for f in fnames) or (isinstance(value, ast.Name) and value.id in self.models):
            self.models.add(name)
        elif any(f.endswith(".to") and _names(value) & self.models for f in fnames):
            self.models.add(name)
        if (any("GradScaler" in f for f in fnames)) or "scaler" in low:
            self.scalers.add(name)
        elif "lr_scheduler" in " ".join(fnames) or "sched" in low:
            pass
        elif (any(f.startswith(("torch.optim.", "optim.")) or f.endswith("configure_optimizers")
                  or any(k in f.split(".")[-1] for k in ("Adam", "SGD", "Optimizer", "Lion", "Muon", "Sophia", "Adafactor", "Lamb", "RMSprop"))
                  for f in fnames) or "optim" in low or low in ("opt", "opts")):
            if "sched" not in low and "lr" != low:
                self.optims.add(name)
        strs = [n.value for n in ast.walk(value) if isinstance(n, ast.Constant)]
        # the training data: read from train.bin, or a wrapping of it alone (torch.from_numpy(train_ids).long())
        files = {_is_data_file(s) for s in strs} - {None}
        if files == {"train.bin"} or (
                (_names(value) - self.imported - _BUILTINS) and (_names(value) - self.imported - _BUILTINS) <= self.train_data):
            self.train_data.add(name)

    def const_value(self, expr, depth=0):
        """The value of a constant expression (literals, names bound to them, arithmetic), else None."""
        if expr is None or depth > 8:
            return None
        if isinstance(expr, ast.Constant) and isinstance(expr.value, (int, float, str, bool)):
            return expr.value
        if isinstance(expr, ast.Name):
            return getattr(self, "consts", {}).get(expr.id)
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
            v = self.const_value(expr.operand, depth + 1)
            return -v if isinstance(v, (int, float)) else None
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            a, b = self.const_value(expr.left, depth + 1), self.const_value(expr.right, depth + 1)
            if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool):
                try:
                    return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(expr.op), a // b if b else None)
                except Exception:  # noqa: BLE001
                    return None
        if isinstance(expr, ast.Call) and _dotted(expr.func) == "int" and len(expr.args) == 1:
            v = self.const_value(expr.args[0], depth + 1)
            return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        return None

    def function(self, call: ast.Call, scope_funcs: dict):
        f = call.func
        if isinstance(f, ast.Name):
            return (scope_funcs.get(f.id) or self.local_funcs.get(f.id) or self.module_funcs.get(f.id)
                    or self.aliases.get(f.id))
        return None


# ------------------------------------------------------------------------------ walking the training loop

@dataclass(frozen=True)
class _Cond:
    node: ast.AST  # the If (or the `if ...: continue` guard)
    branch: str  # body | orelse | after (the statements after `if T: continue`)
    test: ast.AST  # with helper parameters substituted
    negated: bool


@dataclass
class _Ctx:
    conds: tuple = ()
    loops: tuple = ()  # (node, trip) of the loops inside train's training loop, outermost first
    no_grad: bool = False
    tries: tuple = ()
    frames: tuple = ()  # the helper calls that led here
    env: dict = field(default_factory=dict)
    funcs: dict = field(default_factory=dict)

    def add(self, **kw):
        d = dict(conds=self.conds, loops=self.loops, no_grad=self.no_grad, tries=self.tries, frames=self.frames,
                 env=self.env, funcs=self.funcs)
        d.update(kw)
        return _Ctx(**d)


@dataclass
class _Event:
    kind: str  # step | backward | forward | fetch | break | return | continue | train_read | randint
    node: ast.AST
    ctx: _Ctx
    order: int
    info: object = None


_NO_GRAD = ("no_grad", "inference_mode")


def _is_no_grad(expr) -> bool:
    s = _dotted(expr)
    return any(k in s for k in _NO_GRAD) or (s.endswith("set_grad_enabled(False)"))


class _Walker:
    def __init__(self, facts: _Facts, loop: ast.AST | None, loop_var: str | None):
        self.f = facts
        self.loop, self.loop_var = loop, loop_var
        self.events: list[_Event] = []
        self.varying: set[str] = {_IT}
        self._order = 0
        self.in_loop = False
        self.loop_ctx = _Ctx()

    def ev(self, kind, node, ctx, info=None):
        self._order += 1
        self.events.append(_Event(kind, node, ctx, self._order, info))

    # names
    def subst(self, expr, ctx):
        return _substitute(expr, ctx.env)

    def resolves(self, expr, ctx, kind: set[str]) -> bool:
        e = self.subst(expr, ctx)
        if isinstance(e, ast.Name):
            return e.id in kind
        if isinstance(e, ast.Attribute):
            return e.attr in kind or _last(e) in kind
        if isinstance(e, ast.Subscript):
            return self.resolves(e.value, ctx, kind)
        return False

    def is_model(self, expr, ctx) -> bool:
        return self.resolves(expr, ctx, self.f.models)

    def is_optim(self, expr, ctx) -> bool:
        e = self.subst(expr, ctx)
        return self.resolves(e, ctx, self.f.optims) or "optim" in _dotted(e).lower() or _dotted(e) in ("opt",)

    def trip(self, loop, ctx) -> int | None:
        """How many times a `for` runs, where that is a constant (range(K), a literal list)."""
        if not isinstance(loop, ast.For):
            return None
        it = self.subst(loop.iter, ctx)
        if isinstance(it, (ast.List, ast.Tuple)):
            return len(it.elts)
        if isinstance(it, ast.Call) and _dotted(it.func) in ("range", "trange"):
            vals = [self.f.const_value(a) for a in it.args]
            if vals and all(isinstance(v, int) for v in vals):
                return len(range(*vals))
        return None

    # statements
    def block(self, stmts, ctx):
        for st in stmts:
            ctx = self.stmt(st, ctx)

    def stmt(self, st, ctx) -> _Ctx:
        """Walk one statement; returns the context for the statements after it (an `if T: continue` guard)."""
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return ctx
        if isinstance(st, ast.If):
            self.exprs(st.test, ctx)
            test = self.subst(st.test, ctx)
            self.block(st.body, ctx.add(conds=ctx.conds + (_Cond(st, "body", test, False),)))
            self.block(st.orelse, ctx.add(conds=ctx.conds + (_Cond(st, "orelse", test, True),)))
            # `if T: continue` in the loop, `if T: return` in a helper: what follows runs only where T is false
            if st.body and not st.orelse and (isinstance(st.body[-1], ast.Continue) or (ctx.frames and isinstance(st.body[-1], ast.Return))):
                return ctx.add(conds=ctx.conds + (_Cond(st, "after", test, True),))
            return ctx
        if isinstance(st, (ast.For, ast.AsyncFor, ast.While)):
            self.exprs(st.iter if isinstance(st, (ast.For, ast.AsyncFor)) else st.test, ctx)
            if st is self.loop:
                self.in_loop = True
                inner = ctx.add(conds=(), loops=(), tries=())
                self.loop_ctx = ctx
                self.block(st.body, inner)
                self.in_loop = False
                return ctx
            if self.in_loop:
                inner = ctx.add(loops=ctx.loops + ((st, self.trip(st, ctx)),))
            else:
                inner = ctx
            self.block(st.body, inner)
            self.block(st.orelse, ctx)
            return ctx
        if isinstance(st, (ast.With, ast.AsyncWith)):
            ng = ctx.no_grad
            for item in st.items:
                self.exprs(item.context_expr, ctx)
                ng = ng or _is_no_grad(item.context_expr)
            self.block(st.body, ctx.add(no_grad=ng))
            return ctx
        if isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            self.block(st.body, ctx.add(tries=ctx.tries + (st,)))
            for h in st.handlers:
                self.block(h.body, ctx)
            self.block(st.orelse, ctx)
            self.block(st.finalbody, ctx)
            return ctx
        if self.in_loop and isinstance(st, ast.Break):
            self.ev("break", st, ctx)
        elif self.in_loop and isinstance(st, ast.Continue):
            self.ev("continue", st, ctx)
        elif self.in_loop and isinstance(st, ast.Return):
            self.ev("return", st, ctx)
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and _dotted(st.value.func).endswith("set_grad_enabled"):
            ctx = ctx.add(no_grad=_is_no_grad(st.value))
        self.exprs(st, ctx)
        return ctx

    # expressions: the calls and names in source order
    def exprs(self, node, ctx):
        nodes = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n is not node and isinstance(n, (ast.stmt, ast.Lambda, ast.FunctionDef)):
                continue
            nodes.append(n)
            stack.extend(ast.iter_child_nodes(n))
        nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
        for n in nodes:
            if isinstance(n, ast.Call):
                self.call(n, ctx)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and self.in_loop:
                e = self.subst(n, ctx)
                if isinstance(e, ast.Name) and e.id in self.f.train_data:
                    self.ev("train_read", n, ctx)

    def call(self, c: ast.Call, ctx):
        if not self.in_loop:
            return
        func = c.func
        name = _last(func)
        if isinstance(func, ast.Attribute) and func.attr == "step":
            recv = func.value
            if self.is_optim(recv, ctx) and not any(k in _dotted(recv).lower() for k in ("sched", "lr_")):
                self.ev("step", c, ctx)
            elif self.resolves(recv, ctx, self.f.scalers) or "scaler" in _dotted(recv).lower():
                self.ev("step", c, ctx)  # GradScaler.step(optimizer)
        elif "step" in name.lower() and "optim" in name.lower() and self.f.function(c, ctx.funcs) is None:
            self.ev("step", c, ctx)  # an optimizer step in another module: recipes.optimizer_step(...)
        if name == "backward" and (isinstance(func, ast.Attribute)):
            self.ev("backward", c, ctx)
        if (self.is_model(func, ctx) and c.args) or (isinstance(func, ast.Attribute) and func.attr == "forward"
                                                     and self.is_model(func.value, ctx)):
            self.ev("forward", c, ctx)
        for a in c.args:
            s = self.f.const_value(self.subst(a, ctx))
            if isinstance(s, str) and s in ("train", "val"):
                self.ev("fetch", c, ctx, s)
                break
        if _dotted(func) in ("torch.randint", "randint") and len(c.args) >= 2:
            size = self.subst(c.args[1], ctx)
            if isinstance(size, (ast.Tuple, ast.List)) and size.elts:
                self.ev("randint", c, ctx, self.f.const_value(size.elts[0]))
        target = self.f.function(c, ctx.funcs)
        if target is not None and len(ctx.frames) < HELPER_DEPTH and target not in {f for _, f in ctx.frames}:
            self.follow(c, target, ctx)

    def follow(self, c: ast.Call, fn, ctx):
        a = fn.args
        params = a.posonlyargs + a.args
        env = dict(ctx.env)
        for p in params + a.kwonlyargs:
            env.pop(p.arg, None)
        defaults = dict(zip([p.arg for p in params[len(params) - len(a.defaults):]], a.defaults))
        defaults.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        bound = {}
        for p, arg in zip(params, c.args):
            if not isinstance(arg, ast.Starred):
                bound[p.arg] = self.subst(arg, ctx)
        for k in c.keywords:
            if k.arg:
                bound[k.arg] = self.subst(k.value, ctx)
        for p, d in defaults.items():
            bound.setdefault(p, d)
        env.update(bound)
        # names assigned inside the helper vary from call to call
        for n in _walk_no_nested(fn):
            for name, _s in _assigned_names(n):
                env.pop(name, None)
                self.varying.add(name)
        ng = ctx.no_grad or any(_is_no_grad(d) for d in fn.decorator_list)
        funcs = dict(ctx.funcs)
        funcs.update({n.name: n for n in fn.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))})
        self.block(fn.body, ctx.add(frames=ctx.frames + ((c, fn),), env=env, no_grad=ng, funcs=funcs))


# ------------------------------------------------------------------------------------------- the rules

def _train_function(tree: ast.Module) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train"), None)


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


def _is_device_fallback(node: ast.AST, module_funcs) -> bool:
    """`device = resolve_device(...)` with resolve_device defined in the file: the protocol's MPS fallback."""
    v = getattr(node, "value", None)
    return (isinstance(node, ast.Assign) and isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
            and v.func.id == "resolve_device" and "resolve_device" in module_funcs)


def _device_ok(value) -> bool:
    """'mps', torch.device('mps'), or the fallback `'mps' if torch.backends.mps.is_available() else ...`."""
    if isinstance(value, ast.Constant):
        return value.value == protocol.DEVICE
    if (isinstance(value, ast.Call) and _dotted(value.func) in ("torch.device", "device") and len(value.args) == 1
            and isinstance(value.args[0], ast.Constant) and value.args[0].value == protocol.DEVICE):
        return True  # torch.device('mps')
    return (isinstance(value, ast.IfExp) and isinstance(value.body, ast.Constant) and value.body.value == protocol.DEVICE
            and "mps" in _dotted(value.test))


def _check_frozen(facts: _Facts, scopes, v: list[Violation]) -> None:
    tree, fn = facts.tree, facts.fn
    parents = facts.parents
    override_params = _none_default_params(fn) if fn else set()
    rules = dict(FROZEN, **OPTIONAL_FROZEN)
    seen: dict[str, int] = {}
    for scope in scopes:
        nodes = sorted((n for n in _walk_no_nested(scope) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))),
                       key=lambda n: (n.lineno, n.col_offset))
        for node in nodes:
            for name, stmt in _assigned_names(node):
                if name not in rules:
                    continue
                want = rules[name]
                value = getattr(stmt, "value", None)
                if name not in seen:
                    seen[name] = stmt.lineno
                    if name == "device":
                        ok = isinstance(stmt, (ast.Assign, ast.AnnAssign)) and _device_ok(value)
                    else:
                        ok = (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Constant)
                              and type(value.value) is type(want) and value.value == want)
                    if not ok:
                        got = ast.unparse(value) if value is not None else "?"
                        v.append(Violation("frozen", stmt.lineno, f"the frozen {name} must be the literal {want!r}; it is set to {got}"))
                elif _guarded_by_override(stmt, parents, override_params):
                    continue  # a test/smoke-run override that train() without arguments never applies
                elif name == "device" and _is_device_fallback(stmt, facts.module_funcs):
                    continue  # the protocol's fallback where MPS is missing
                else:
                    got = ast.unparse(stmt)
                    v.append(Violation("frozen", stmt.lineno, f"the frozen {name} is changed after line {seen[name]}: `{got}`"))
    for name, want in FROZEN.items():
        if name not in seen:
            v.append(Violation("frozen", None, f"the frozen {name} = {want!r} is never set"))
    # a frozen size passed as another literal: GPTConfig(n_layer=6), get_batch('val', batch_size=32)
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            for k in n.keywords:
                if k.arg in FROZEN and k.arg != "device" and not (isinstance(k.value, ast.Name) and k.value.id == k.arg):
                    got = facts.const_value(k.value)
                    if isinstance(got, int) and got != FROZEN[k.arg]:
                        v.append(Violation("frozen", n.lineno, f"{_src(n.func)}(...) is given {k.arg}={_src(k.value)} ({got}); "
                                                               f"the frozen {k.arg} is {FROZEN[k.arg]}"))


def _strings(node) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _path_strings(node, facts: _Facts, depth=0) -> list[str]:
    """The strings of an expression, through the names it uses (a path built on an earlier line)."""
    out = _strings(node)
    if depth < 3:
        for name in _names(node):
            for st in facts.assigns.get(name, []):
                if isinstance(st, (ast.Assign, ast.AnnAssign)) and st.value is not None:
                    out += _path_strings(st.value, facts, depth + 1)
    return out


def _check_data(facts: _Facts, v: list[Violation]) -> None:
    """train.bin and val.bin read as uint16 token ids, or through the project's loader data.load."""
    loaded = {"train.bin": [], "val.bin": []}
    project_loader = False
    for n in ast.walk(facts.tree):
        if not isinstance(n, ast.Call):
            continue
        fname = _dotted(n.func)
        if fname in ("data.load", "dreamteam.data.load"):
            project_loader = True
            continue
        if fname.split(".")[-1] not in ("memmap", "fromfile", "load", "frombuffer"):
            continue
        path_args = list(n.args[:1]) + [k.value for k in n.keywords if k.arg in ("filename", "file", "path")]
        names = {_is_data_file(s) for a in path_args for s in _path_strings(a, facts)} - {None}
        if not names:
            continue
        dtype = next((k.value for k in n.keywords if k.arg == "dtype"), None)
        if dtype is None and len(n.args) >= 2:
            dtype = n.args[1]
        dname = ast.unparse(dtype) if dtype is not None else None
        for key in sorted(names):
            loaded[key].append(n.lineno)
            if dname is None or dname.split(".")[-1].strip("'\"") != "uint16":
                v.append(Violation("data", n.lineno, f"{key} must be read as uint16 token ids; it is read with dtype {dname}"))
    if project_loader:
        return
    missing = [k for k, lines in loaded.items() if not lines]
    if missing:
        v.append(Violation("data", None, f"the data loading is not the protocol's: no uint16 read of {' and '.join(missing)} found "
                                         "(np.memmap / np.fromfile of train.bin and val.bin, or dreamteam's data.load)"))


def _range_of(it) -> ast.Call | None:
    """range(...) / trange(...), possibly wrapped: tqdm(range(max_iters), ...), enumerate(range(...))."""
    if not isinstance(it, ast.Call):
        return None
    if _dotted(it.func) in ("range", "trange"):
        return it
    return next((r for r in map(_range_of, it.args) if r is not None), None)


def _find_training_loop(facts: _Facts):
    """The loop of train() that holds the optimizer step (directly or through helpers)."""
    fn = facts.fn
    holders = []

    def collect(stmts, stack):
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(st, (ast.For, ast.AsyncFor, ast.While)):
                collect(st.body, stack + [st])
                collect(st.orelse, stack)
                continue
            blocks = [getattr(st, k) for k in ("body", "orelse", "finalbody") if isinstance(getattr(st, k, None), list)]
            blocks += [h.body for h in getattr(st, "handlers", [])]
            if blocks:
                for b in blocks:
                    collect(b, stack)
                continue
            w = _Walker(facts, None, None)
            w.in_loop = True  # record steps wherever they are
            w.exprs(st, _Ctx())
            if stack and any(e.kind == "step" for e in w.events):
                holders.append(stack[0])

    collect(fn.body, [])
    if not holders:
        loops = [n for n in _walk_no_nested(fn) if isinstance(n, (ast.For, ast.While))]
        ranged = [n for n in loops if isinstance(n, ast.For) and _range_of(n.iter) is not None]
        return (ranged or loops or [None])[0]
    return max(set(holders), key=lambda lp: (holders.count(lp), -lp.lineno))


def _exclusive(a: _Event, b: _Event) -> bool:
    """Can two events not happen in the same iteration (one in an if's body, the other in its else)?"""
    ca = {(c.node, c.branch) for c in a.ctx.conds}
    for c in b.ctx.conds:
        if c.branch in ("body", "orelse") and (c.node, "orelse" if c.branch == "body" else "body") in ca:
            return True
    return False


def _eval_set(conds, facts: _Facts, max_iters: int):
    """The iterations at which all these conditions hold, where they depend on the iteration alone; else the
    name that stops the computation."""
    parts = []
    for c in conds:
        e = c.test
        parts.append(f"not ({ast.unparse(e)})" if c.negated else f"({ast.unparse(e)})")
    expr = ast.parse(" and ".join(parts), mode="eval")
    env = {}
    for n in ast.walk(expr):
        if isinstance(n, ast.Name) and n.id != _IT:
            val = facts.const_value(n)
            if val is None:
                return None, n.id
            env[n.id] = val
        elif isinstance(n, ast.Call) and _dotted(n.func) not in ("int", "abs", "min", "max", "bool"):
            return None, _src(n)
        elif isinstance(n, (ast.Attribute, ast.Subscript, ast.Lambda, ast.NamedExpr)) or (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)):
            return None, _src(n)
    code = compile(expr, "<condition>", "eval")
    glb = {"__builtins__": {"int": int, "abs": abs, "min": min, "max": max, "bool": bool}}
    out = []
    for it in range(max_iters):
        env[_IT] = it
        try:
            if eval(code, glb, env):  # noqa: S307 - names are constants and the loop variable; no calls, no attributes
                out.append(it)
        except Exception:  # noqa: BLE001
            return None, "an expression that fails for some iteration"
    return out, None


def _describe(its: list[int]) -> str:
    if not its:
        return "never"
    if len(its) <= 4:
        return "at iterations " + ", ".join(map(str, its))
    steps = {b - a for a, b in zip(its, its[1:])}
    every = f", every {steps.pop()}" if len(steps) == 1 else ""
    return f"at iterations {its[0]}, {its[1]}, {its[2]}, ..., {its[-1]} ({len(its)} times{every})"


def _loop_var_conds(conds, w: _Walker):
    return [c for c in conds if _IT in _names(c.test)]


def _varying(test, w: _Walker, loop_stored: set[str]) -> bool:
    names = _names(test)
    return bool(names & (w.varying | loop_stored | {_IT})) or _has_call(test)


def _check_loop(facts: _Facts, v: list[Violation]) -> None:
    fn = facts.fn
    loop = _find_training_loop(facts)
    if loop is None:
        v.append(Violation("loop", fn.lineno, "no training loop in train(): the protocol's is `for it in range(max_iters)` "
                                              "with one optimizer step per iteration"))
        return
    if isinstance(loop, ast.While):
        v.append(Violation("loop", loop.lineno, f"the training loop is `while {_src(loop.test)}`: it can stop before max_iters "
                                                "steps; the protocol's is `for it in range(max_iters)`, every iteration a step"))
        # the counter of `while it < max_iters:` stands for the iteration
        t = loop.test
        loop_var = (t.left.id if isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and len(t.ops) == 1
                    and isinstance(t.ops[0], (ast.Lt, ast.LtE)) else None)
    else:
        loop_var = loop.target.id if isinstance(loop.target, ast.Name) else (
            loop.target.elts[0].id if isinstance(loop.target, ast.Tuple) and loop.target.elts and isinstance(loop.target.elts[0], ast.Name)
            and isinstance(loop.iter, ast.Call) and _dotted(loop.iter.func) == "enumerate" else None) if isinstance(loop, ast.For) else None
        r = _range_of(loop.iter)
        vals = [facts.const_value(a) for a in r.args] if r is not None else []
        if r is None or not vals or not all(isinstance(x, int) for x in vals) or range(*vals) != range(protocol.MAX_ITERS):
            v.append(Violation("loop", loop.lineno, f"the training loop runs over `{_src(loop.iter)}`; the protocol's is "
                                                    f"`range(max_iters)`, iterations 0 to {protocol.MAX_ITERS - 1}"))
    max_iters = protocol.MAX_ITERS

    w = _Walker(facts, loop, loop_var)
    w.in_loop = False
    env = {loop_var: ast.Name(_IT, ast.Load())} if loop_var else {}
    loop_stored = {name for n in _walk_no_nested(loop) for name, _ in _assigned_names(n)}
    if isinstance(loop, ast.For):
        loop_stored |= {t.id for t in ast.walk(loop.target) if isinstance(t, ast.Name)}
    # the loop's own names: `do_eval = it % 100 == 0` then `if do_eval:`
    single = {}
    for n in _walk_no_nested(loop):
        for name, st in _assigned_names(n):
            single.setdefault(name, []).append(st)
    for name, sts in single.items():
        if len(sts) == 1 and isinstance(sts[0], ast.Assign) and name != loop_var and sts[0].value is not None \
                and loop_var and loop_var in _names(sts[0].value) and not _has_call(sts[0].value):
            env[name] = _substitute(sts[0].value, {loop_var: ast.Name(_IT, ast.Load())})
    w.block(fn.body, _Ctx(env=env, funcs={}))
    ev = w.events
    lctx = getattr(w, "loop_ctx", _Ctx())

    # exceptions that can end the loop early and still let train() return
    for t in lctx.tries:
        for h in t.handlers:
            htype = _dotted(h.type) if h.type is not None else "everything"
            reraises = any(isinstance(s, ast.Raise) for s in h.body) or any(isinstance(n, ast.Raise) for s in h.body for n in ast.walk(s))
            if "KeyboardInterrupt" in htype and "," not in htype or reraises:
                continue
            v.append(Violation("loop", h.lineno, f"the training loop is inside `try` (line {t.lineno}) and `except {htype}` swallows "
                                                 "the exception: an exception can end training before max_iters steps and train() still returns"))

    for e in ev:
        if e.kind == "break" and not e.ctx.frames and not e.ctx.loops:
            v.append(Violation("loop", e.node.lineno, "`break` leaves the training loop: training can end before max_iters optimizer steps (early stopping)"))
        elif e.kind == "return" and not e.ctx.frames:
            v.append(Violation("loop", e.node.lineno, "`return` inside the training loop can end training before max_iters steps"))

    steps = [e for e in ev if e.kind == "step"]  # none seen: a step taken elsewhere (model.py) is the dynamic check's
    for s in steps:
        for c in s.ctx.conds:
            if not _varying(c.test, w, loop_stored):
                continue  # a setting fixed for the whole run (use_amp, scaler is not None)
            if c.branch in ("body", "orelse") and any(o is not s and o.kind == "step" and any(
                    oc.node is c.node and oc.branch != c.branch for oc in o.ctx.conds) for o in steps):
                continue  # both branches step
            test = ast.unparse(c.test).replace(_IT, loop_var or "it")
            if c.branch == "after":
                what = f"skipped on iterations where `{test}` (`continue`, line {c.node.lineno})"
            elif c.branch == "orelse":
                what = f"skipped where `{test}` (line {c.node.lineno}) holds"
            else:
                what = f"conditional: taken only where `{test}` (line {c.node.lineno})"
            v.append(Violation("loop", s.node.lineno, f"the optimizer step is {what}; every iteration must be one optimizer step "
                                                      "(gradient accumulation and skipped steps are not the protocol)"))
            break
        for t in s.ctx.tries:
            for h in t.handlers:
                if not any(isinstance(n, ast.Raise) for st in h.body for n in ast.walk(st)):
                    v.append(Violation("loop", s.node.lineno, f"the optimizer step is inside `try` (line {t.lineno}) whose `except` "
                                                              f"(line {h.lineno}) goes on without it: a failing step is skipped"))
                    break
    twice = [(a, b) for i, a in enumerate(steps) for b in steps[i + 1:] if not _exclusive(a, b)
             and _dotted(w.subst(a.node.func, a.ctx)) == _dotted(w.subst(b.node.func, b.ctx)) and not (a.ctx.loops or b.ctx.loops)]
    if twice:
        a, b = twice[0]
        v.append(Violation("loop", b.node.lineno, f"the optimizer steps twice in one iteration (`{_src(a.node)}`, lines {a.node.lineno} "
                                                  f"and {b.node.lineno}); every iteration must be one optimizer step"))
    for e in ev:
        if e.kind == "continue" and not e.ctx.loops and not e.ctx.frames:
            later = [s for s in steps if s.order > e.order]
            if later and not any(c.branch == "after" for c in later[0].ctx.conds):
                v.append(Violation("loop", e.node.lineno, f"`continue` skips the optimizer step (line {later[0].node.lineno}) on some "
                                                          "iterations; every iteration must be one optimizer step"))

    # forwards: an evaluation is under no_grad or under a condition on the iteration; the rest train
    forwards = [e for e in ev if e.kind == "forward"]
    is_eval = lambda e: e.ctx.no_grad or bool(_loop_var_conds(e.ctx.conds, w))  # noqa: E731
    train_fw = [e for e in forwards if not is_eval(e)]
    backs = [e for e in ev if e.kind == "backward" and not is_eval(e)]
    flagged_loops = set()
    for e in train_fw + backs:
        for lp, trip in e.ctx.loops:
            if trip == 1 or lp in flagged_loops:
                continue
            flagged_loops.add(lp)
            what = "training forward" if e.kind == "forward" else "backward pass"
            head = f"for {_src(lp.target)} in {_src(lp.iter)}" if isinstance(lp, ast.For) else f"while {_src(lp.test)}"
            v.append(Violation("accumulation", lp.lineno, f"micro-batch accumulation: a {what} (line {e.node.lineno}) inside "
                                                          f"`{head}` within the training loop; the protocol takes one training "
                                                          "forward and one backward per optimizer step"))
    for group, what in ((train_fw, "training forwards"), (backs, "backward passes")):
        same_path = [(a, b) for i, a in enumerate(group) for b in group[i + 1:] if not _exclusive(a, b)
                     and not (a.ctx.loops or b.ctx.loops)]
        if same_path:
            a, b = same_path[0]
            v.append(Violation("accumulation", b.node.lineno, f"micro-batch accumulation: {what} at lines {a.node.lineno} and "
                                                              f"{b.node.lineno} in one iteration; the protocol takes one training "
                                                              "forward and one backward per optimizer step"))

    _check_evaluation(facts, w, ev, forwards, is_eval, loop, loop_var, max_iters, loop_stored, v)


def _check_evaluation(facts, w, ev, forwards, is_eval, loop, loop_var, max_iters, loop_stored, v):
    var = loop_var or "it"
    want = protocol.eval_iterations(max_iters)
    key = lambda x: (x.ctx.frames, tuple((c.node, c.branch) for c in x.ctx.conds))  # noqa: E731
    val_places = {key(e) for e in ev if e.kind == "fetch" and e.info == "val"}
    # an evaluation: a forward under a condition on the iteration, or a no_grad forward beside a validation draw
    # (a no_grad forward of training data on every step, an EMA teacher, is not one)
    evals = [e for e in forwards if is_eval(e) and (_loop_var_conds(e.ctx.conds, w) or key(e) in val_places)]
    if not evals:
        return  # an evaluation the walk cannot see (a method of the model): the dynamic check counts them
    # cadence: the iterations at which the conditions around each evaluation forward hold
    seen = set()
    for e in evals:
        conds = _loop_var_conds(e.ctx.conds, w)
        k = tuple((c.node, c.branch) for c in conds)
        if k in seen:
            continue
        seen.add(k)
        if not conds:
            v.append(Violation("eval", e.node.lineno, f"the evaluation forward runs on every iteration (no condition on `{var}`); "
                                                      f"the protocol evaluates at `{var} % 100 == 0`, every 100 iterations"))
            continue
        line = conds[0].node.lineno
        shown = " and ".join(f"`not ({ast.unparse(c.test).replace(_IT, var)})`" if c.negated
                             else f"`{ast.unparse(c.test).replace(_IT, var)}`" for c in conds)
        its, stop = _eval_set(conds, facts, max_iters)
        if its is None:
            v.append(Violation("eval", line, f"the evaluation condition {shown} depends on `{stop.replace(_IT, var)}`, not on the "
                                             f"iteration alone; the protocol evaluates at `{var} % 100 == 0`, every 100 iterations"))
            continue
        if its != want:
            v.append(Violation("eval", line, f"the evaluation condition {shown} holds {_describe(its)}; the protocol evaluates "
                                             f"every 100 iterations, at `{var} % 100 == 0` ({len(want)} times: {_describe(want)[3:].split(' (')[0]})"))
            continue
        others = [c for c in e.ctx.conds if c not in conds and _varying(c.test, w, loop_stored)]
        if others:
            c = others[0]
            v.append(Violation("eval", c.node.lineno, f"the evaluation also depends on `{ast.unparse(c.test)}` (line {c.node.lineno}); "
                                                      f"the protocol evaluates at every `{var} % 100 == 0`"))
    # the evaluation's code: under an evaluation condition, or beside an unconditional evaluation forward
    regions = {c.node for e in evals for c in _loop_var_conds(e.ctx.conds, w)}
    plain_places = {key(e) for e in evals if not _loop_var_conds(e.ctx.conds, w)}

    def in_eval(x: _Event) -> bool:
        return any(c.node in regions for c in x.ctx.conds) or key(x) in plain_places

    # one batch: no forward inside a loop of several passes, no second forward in the same evaluation
    flagged = set()
    for e in evals:
        for lp, trip in e.ctx.loops:
            if trip == 1 or lp in flagged:
                continue
            flagged.add(lp)
            if isinstance(lp, ast.For) and isinstance(lp.iter, (ast.List, ast.Tuple)) and "train" in _strings(lp.iter):
                v.append(Violation("eval", lp.lineno, f"the evaluation runs over the splits `{_src(lp.iter)}`: it draws a training "
                                                      "batch, and the protocol's evaluation is one batch of validation data"))
                continue
            n = f", {trip} batches" if trip else ""
            head = f"for {_src(lp.target)} in {_src(lp.iter)}" if isinstance(lp, ast.For) else f"while {_src(lp.test)}"
            v.append(Violation("eval", lp.lineno, f"the evaluation averages several validation batches: a forward (line {e.node.lineno}) "
                                                  f"inside `{head}`{n}; the protocol's evaluation is one batch of "
                                                  f"{protocol.BATCH_SIZE} x {protocol.BLOCK_SIZE}"))
    single = [e for e in evals if not any(t != 1 for _, t in e.ctx.loops)]
    region_of = lambda x: frozenset(c.node for c in _loop_var_conds(x.ctx.conds, w)) or key(x)  # noqa: E731
    pairs = [(a, b) for i, a in enumerate(single) for b in single[i + 1:] if not _exclusive(a, b) and region_of(a) == region_of(b)]
    if pairs:
        a, b = pairs[0]
        v.append(Violation("eval", b.node.lineno, f"one evaluation runs several forwards (lines {a.node.lineno} and {b.node.lineno}); "
                                                  f"the protocol's evaluation is one validation batch of {protocol.BATCH_SIZE} x "
                                                  f"{protocol.BLOCK_SIZE}"))
    for x in ev:
        if x.kind == "fetch" and x.info == "train" and in_eval(x):
            v.append(Violation("eval", x.node.lineno, f"the evaluation draws a training batch (`{_src(x.node)}`): it must use validation data"))
        elif x.kind == "train_read" and in_eval(x) and not _selected_by_split(x.node, facts):
            v.append(Violation("eval", x.node.lineno, f"the evaluation reads {x.node.id} (training data): it must use validation data"))
        elif x.kind == "randint" and isinstance(x.info, int) and x.info != protocol.BATCH_SIZE:
            where = "an evaluation" if in_eval(x) else "a training"
            site = x.ctx.frames[0][0] if x.ctx.frames else x.node  # the call in the training loop that leads there
            via = f" through `{_src(site)}`" if site is not x.node else ""
            v.append(Violation("eval" if in_eval(x) else "frozen", site.lineno,
                               f"{where} batch of {x.info} rows{via} (`{_src(x.node)}`, line {x.node.lineno}); the protocol's "
                               f"batches are {protocol.BATCH_SIZE} x {protocol.BLOCK_SIZE}"))


def _selected_by_split(node, facts: _Facts) -> bool:
    """Is this read of the training data one branch of a split selector (`train_data if split == 'train' else val_data`)?"""
    p = facts.parents.get(node)
    while p is not None and not isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if isinstance(p, (ast.IfExp, ast.If)) and _strings(p.test) and isinstance(p.test, ast.Compare):
            return True
        if isinstance(p, ast.Subscript) and isinstance(p.value, (ast.Dict, ast.Name)) and _names(p.slice):
            return True  # {'train': train_data, 'val': val_data}[split]
        if isinstance(p, ast.Dict):
            return True
        p = facts.parents.get(p)
    return False


def _check_return(fn, v: list[Violation]) -> None:
    returns = [n for n in _walk_no_nested(fn) if isinstance(n, ast.Return)]
    if not returns:
        v.append(Violation("return", fn.lineno, "train() returns nothing; it must return best_vloss, elapsed_min"))

    def plain(e):
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "float" and len(e.args) == 1:
            e = e.args[0]
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "item" and not e.args:
            e = e.func.value
        return e.id if isinstance(e, ast.Name) else None

    for r in returns:
        ok = isinstance(r.value, ast.Tuple) and tuple(plain(e) for e in r.value.elts) == RETURN_NAMES
        if not ok:
            got = ast.unparse(r.value) if r.value is not None else "nothing"
            v.append(Violation("return", r.lineno, f"train() must return `best_vloss, elapsed_min`; it returns `{got}`"))


def _module_sets_frozen(tree) -> bool:
    return any(name in FROZEN or name in OPTIONAL_FROZEN for n in tree.body for name, _ in _assigned_names(n))


def static_check(source: str, filename: str = "train_mps.py") -> list[Violation]:
    """Every violation of the frozen protocol that can be read from the source of train_mps.py."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as e:
        return [Violation("syntax", e.lineno, f"{filename} does not parse: {e.msg}")]
    v: list[Violation] = []
    fn = _train_function(tree)
    facts = _Facts(tree, fn)
    if fn is None:
        v.append(Violation("return", None, "there is no top-level function train()"))
        _check_frozen(facts, [tree], v)
        _check_data(facts, v)
        return v
    _check_frozen(facts, [tree, fn] if _module_sets_frozen(tree) else [fn], v)
    _check_data(facts, v)
    try:
        _check_loop(facts, v)
    except Exception as e:  # noqa: BLE001 - code this walk does not know: said, never a traceback; the dynamic check still runs
        v.append(Violation("loop", fn.lineno, f"the static check could not read train()'s training loop ({type(e).__name__}: {e}); "
                                              "nothing is shown about its steps and evaluations"))
    _check_return(fn, v)
    return sorted(set(v), key=lambda x: (x.line or 0, x.kind, x.message))


# -------------------------------------------------------------------------------------------- dynamic

def expected_evaluations(max_iters: int, eval_interval: int = protocol.EVAL_INTERVAL) -> int:
    """Evaluations at it % eval_interval == 0 for it in range(max_iters): 101 for 10001."""
    return len(range(0, max_iters, eval_interval))


def dynamic_violations(dyn: dict, max_iters: int = protocol.MAX_ITERS, completed: bool = True,
                       reason: str | None = None) -> list[Violation]:
    """Judge the counts the harness runner recorded while train() ran (harness_runner.Monitor.report()).

    completed: train() returned. A run that did not (a crash, a timeout) is judged on what it recorded so
    far: it gets an `incomplete` entry, never a clean verdict, plus every violation already visible."""
    v: list[Violation] = []
    line = lambda key: (dyn.get(key) or [None])[0]  # noqa: E731
    steps = dyn.get("steps", 0)
    if not completed:
        why = f" ({reason})" if reason else ""
        v.append(Violation("incomplete", None, f"the run is incomplete after {steps} optimizer steps{why}: the protocol takes "
                                               f"{max_iters}, so it cannot be shown to keep the protocol"))
    elif steps != max_iters:
        v.append(Violation("steps", line("step_lines"), f"train() took {steps} optimizer steps; the protocol takes exactly {max_iters}"))
    events = dyn.get("eval_events")
    if events is None:  # counts of an older runner: one batch per evaluation
        events = [{"steps": s, "batches": 1} for s in dyn.get("eval_at_step", [])]
    want = expected_evaluations(max_iters)
    if completed and len(events) != want:
        v.append(Violation("evals", line("eval_lines"), f"train() evaluated {len(events)} times; the protocol evaluates {want} times "
                                                        f"(every {protocol.EVAL_INTERVAL} iterations, at it % 100 == 0)"))
    for k, e in enumerate(events):
        ok = protocol.eval_step_counts(k)
        if e["steps"] not in ok:
            v.append(Violation("evals", e.get("line") or line("eval_lines"),
                               f"evaluation {k} came after {e['steps']} optimizer steps, not {ok[0]} or {ok[1]}: the protocol "
                               f"evaluates at it % 100 == 0, before or after that iteration's step"))
            break
    many = [(k, e) for k, e in enumerate(events) if e.get("batches", 1) != protocol.EVAL_BATCHES]
    if many:
        k, e = many[0]
        v.append(Violation("eval_data", e.get("line") or line("eval_lines"),
                           f"evaluation {k} (after {e['steps']} steps) ran {e['batches']} evaluation forwards; the protocol's "
                           f"evaluation is one batch of {protocol.BATCH_SIZE} x {protocol.BLOCK_SIZE} validation tokens"
                           + (f" ({len(many)} of {len(events)} evaluations)" if len(many) > 1 else "")))
    acc = dyn.get("step_mismatch") or []
    if acc:
        s = acc[0]
        v.append(Violation("accumulation", s.get("line"), f"optimizer step {s['step']} came after {s['forwards']} training "
                                                          f"forward(s) and {s['backwards']} backward pass(es); the protocol takes "
                                                          f"exactly one of each per step ({dyn.get('step_mismatch_count', len(acc))} "
                                                          "such steps: micro-batch accumulation or extra passes)"))
    src = dyn.get("eval_sources", {})
    if src.get("train", 0):
        v.append(Violation("eval_data", dyn.get("train_eval_line"), f"{src['train']} evaluation batch(es) came from the training data; every evaluation batch must come from val.bin"))
    if src.get("unknown", 0):
        v.append(Violation("eval_data", dyn.get("unknown_eval_line"), f"{src['unknown']} evaluation batch(es) match no window of val.bin; every evaluation batch must come from val.bin"))
    if dyn.get("bad_shapes"):
        shape, where, ln = dyn["bad_shapes"][0]
        v.append(Violation("shape", ln, f"{'an' if where == 'evaluation' else 'a'} {where} batch has shape {shape}; the protocol's batches are {protocol.BATCH_SIZE} x {protocol.BLOCK_SIZE}"))
    if completed and dyn.get("batches_seen", 1) == 0:
        v.append(Violation("run", None, "no batch of token ids reached a torch module: the harness could not observe training"))
    return v


def as_dicts(violations) -> list[dict]:
    return [asdict(x) for x in violations]
