"""The layout of folders is the architecture (docs/components.md "Layout"):

- the core, dreamteam/*.py (and dreamteam/components/), imports neither torch nor jax nor an engine;
- the tools, dreamteam/tools/, import an engine only inside the command that runs it;
- the engines: jaxmodel/ never imports torch, torchport/ never imports jax.

The core and the tools are imported for real in a fresh interpreter; the engines are read with ast (cheap).
"""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="pyproject.toml is read with Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("jaxmodel", "torchport", "parity", "train_mps")
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax", "chex")


def modules_of(folder: Path, package: str, recursive: bool = False) -> list[str]:
    """Dotted names of the modules of `folder` (the package itself for __init__.py); not __main__ (it runs)."""
    found = []
    for path in sorted(folder.rglob("*.py") if recursive else folder.glob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        found.append(".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts)))
    return found


def core_modules() -> list[str]:
    names = modules_of(ROOT / "dreamteam", "dreamteam")
    if (ROOT / "dreamteam" / "components").is_dir():  # the component declarations, where they are
        names += modules_of(ROOT / "dreamteam" / "components", "dreamteam.components", recursive=True)
    return names


def imported_in_fresh_interpreter(modules: list[str], then: str = "") -> dict[str, list[str]]:
    """module -> the engine or framework packages that importing it (after the ones before it) added to sys.modules,
    in one fresh interpreter with this checkout first on the path; `then` runs after the imports."""
    code = f"""
import importlib, json, sys
roots = {list(ENGINES + FRAMEWORKS)!r}
def loaded():  # the packages, not their thousand submodules
    return {{m.split(".")[0] for m in sys.modules if m.split(".")[0] in roots}}
new = {{}}
for name in {modules!r}:
    before = loaded()
    importlib.import_module(name)
    new[name] = sorted(loaded() - before)
before = loaded()
{then}
new["(then)"] = sorted(loaded() - before)
print(json.dumps(new))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_core_imports_no_engine_and_no_framework():
    names = core_modules()
    assert {"dreamteam", "dreamteam.protocol", "dreamteam.config", "dreamteam.registry", "dreamteam.data",
            "dreamteam.runs"} <= set(names)
    assert not any(n.startswith("dreamteam.tools") for n in names)
    new = imported_in_fresh_interpreter(names)
    assert {n: m for n, m in new.items() if m} == {}


def test_the_command_line_and_every_tool_import_no_engine():
    """Each command imports its engine inside itself: importing dreamteam.tools.cli and building its parser (which
    imports the loop's tools) loads no engine, so that `dreamteam --help` and bad arguments are fast."""
    tools = modules_of(ROOT / "dreamteam" / "tools", "dreamteam.tools")
    assert {"dreamteam.tools.cli", "dreamteam.tools.bench", "dreamteam.tools.harness_runner"} <= set(tools)
    new = imported_in_fresh_interpreter(["dreamteam.tools.cli"] + tools,
                                        then="importlib.import_module('dreamteam.tools.cli').build_parser()")
    assert {n: m for n, m in new.items() if m} == {}


def imports_of(path: Path) -> set[str]:
    """Every module an `import` statement of the file names, at any depth (top level, in functions, in try)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # from dreamteam import tools
    return names


def foreign_imports(paths, forbidden, root: Path = ROOT) -> dict[str, list[str]]:
    """path (relative to root) -> the modules it imports that are, or lie inside, one of `forbidden`."""
    out = {}
    for path in paths:
        bad = sorted(n for n in imports_of(path) if any(n == f or n.startswith(f + ".") for f in forbidden))
        if bad:
            out[path.relative_to(root).as_posix()] = bad
    return out


def test_jaxmodel_never_imports_torch_and_torchport_never_imports_jax():
    assert foreign_imports((ROOT / "jaxmodel").rglob("*.py"), ("torch", "torchport", "train_mps")) == {}
    assert foreign_imports((ROOT / "torchport").rglob("*.py"), ("jax", "jaxlib", "flax", "optax", "chex", "jaxmodel")) == {}


def test_the_engines_never_import_the_tools():
    """The tools drive the engines, never the other way: train_mps.py's --set grammar is the core's (dreamteam.settings)."""
    engines = [ROOT / "train_mps.py", ROOT / "model.py"]
    engines += [p for d in ("jaxmodel", "torchport", "parity") for p in (ROOT / d).rglob("*.py")]
    assert foreign_imports(engines, ("dreamteam.tools",)) == {}


def test_the_core_imports_neither_the_tools_nor_an_engine_even_inside_a_function():
    """The import-time check above cannot see an import inside a function; this one reads every statement.
    (torch inside a function is allowed: dreamteam.arguments checks a CUDA/MPS device name with it.)"""
    core = [p for p in (ROOT / "dreamteam").glob("*.py") if p.name != "__main__.py"]  # `python -m dreamteam` runs the tools
    core += list((ROOT / "dreamteam" / "components").rglob("*.py")) if (ROOT / "dreamteam" / "components").is_dir() else []
    assert len(core) >= 6
    assert foreign_imports(core, ("dreamteam.tools", "jax", "flax", "optax") + ENGINES) == {}


def test_the_scanner_sees_imports_at_any_depth(tmp_path):
    """foreign_imports must catch a lazy import (inside a function, under try), or the tests above prove nothing."""
    f = tmp_path / "x.py"
    f.write_text("def g():\n    try:\n        from torch.nn import functional\n    except ImportError:\n        pass\n"
                 "from dreamteam import tools\nimport jaxmodel.model as m\n")
    assert imports_of(f) >= {"torch.nn", "dreamteam.tools", "jaxmodel.model"}
    assert foreign_imports([f], ("torch", "dreamteam.tools", "jax"), root=tmp_path) == {
        "x.py": ["dreamteam.tools", "torch.nn", "torch.nn.functional"]}  # jaxmodel is not jax


def test_component_commands_are_registered_and_resolve():
    """Every command of the table is a subcommand of the parser, and its "module:function" imports to a function."""
    import argparse

    from dreamteam.tools import cli

    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(cli.COMPONENT_COMMANDS) == {"export-int8", "laplace-rates", "expert-load"}
    for name in cli.COMPONENT_COMMANDS:
        assert name in sub.choices
        assert sub.choices[name].get_default("func") is cli._run_component_command
        assert callable(cli.component_command(name))
        module = cli.COMPONENT_COMMANDS[name].split(":")[0]
        assert module.startswith("torchport."), "a component's command lives beside its torch module"


def test_every_package_ships_and_both_entry_points_run_the_one_command_line():
    """A package folder missing from pyproject's list is missing from a fresh install (the console script then
    fails to import); `dreamteam` and `python -m dreamteam` are the same main."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for top in ("dreamteam", "jaxmodel", "torchport", "parity")
               for p in (ROOT / top).rglob("__init__.py")}
    assert folders <= listed, f"not shipped: {sorted(folders - listed)}"
    module, _, function = project["project"]["scripts"]["dreamteam"].partition(":")
    assert module == "dreamteam.tools.cli"
    main = getattr(importlib.import_module(module), function)
    tree = ast.parse((ROOT / "dreamteam" / "__main__.py").read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == module and [a.name for a in n.names] == [function]
               for n in tree.body)
    assert main(["personas"]) == 0


@pytest.mark.parametrize("argv", [["--help"], ["export-int8", "--help"]])
def test_python_m_dreamteam_runs(argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "dreamteam", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: dreamteam" in r.stdout
