"""The import graph is the data flow: packages only import layers below them, no modules
import each other in a cycle, and no function is longer than a screen. The layers are the
diagram in ARCHITECTURE.md."""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"

# Lower numbers are lower layers; a unit may import only units of a lower number (and itself).
LAYERS = {
    "errors": 0, "utils": 1, "progress": 1, "formatting": 1, "output": 0, "config": 2,
    "config_reference": 2, "stats": 2,
    "data": 3, "models": 3,
    "runs": 4, "engine": 4,
    "training": 5, "evaluate": 5, "report": 5,
    "execute": 6,
    "sweep": 7,
    "studies": 8,
    "api": 9, "cli": 10, "__main__": 11,
}
ROOT = "__init__"  # the package root: version, thin lazy API wrappers; importable by all


def unit_of(module: str) -> str:
    """'reslab.training.loop' -> 'training'; 'reslab' -> the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def module_name(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, src: Path = SRC) -> set[str]:
    """Absolute names of the reslab modules `path` imports (relative imports resolved), and
    the 'reslab.*' names it hands to importlib.import_module (a dynamic import is an edge)."""
    tree = ast.parse(path.read_text())
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "reslab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "reslab":
                continue
            # `from .pkg import mod` imports the module; `from .pkg import name` the package.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if is_module(sub, src) else target)
        elif is_import_module_call(node):
            found |= {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)
                      and isinstance(c.value, str) and c.value.startswith("reslab.")}
    return found


def is_import_module_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
        (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def is_module(name: str, src: Path = SRC) -> bool:
    path = src.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph(src: Path = SRC) -> dict[str, set[str]]:
    return {module_name(p, src): imports_of(p, src) for p in src.rglob("*.py")}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    """Imports against the layers; importing the package root from inside a package too (the
    root's lazy API wrappers sit above every layer: the version comes from the metadata)."""
    upward = []
    for module, targets in g.items():
        here = unit_of(module)
        for target in targets:
            there = unit_of(target)
            if here == ROOT or there == here:
                continue
            if there == ROOT or LAYERS[there] >= LAYERS[here]:
                upward.append(f"{module} imports {target} ({here} -> {there})")
    return sorted(upward)


def import_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of module imports (the package root included), or None."""
    edges = {m: {t for t in ts if t in g and t != m} for m, ts in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


graph_cache = graph()


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in graph_cache} - {ROOT}
    assert units <= set(LAYERS), f"add to LAYERS and ARCHITECTURE.md: {units - set(LAYERS)}"


def test_packages_only_import_lower_layers():
    upward = upward_imports(graph_cache)
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_module_import_cycles():
    cycle = import_cycle(graph_cache)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", ["reslab.data.augment", "reslab.training.loop"])
def test_the_checker_sees_imports(module):
    # A checker that finds nothing would pass everything: it must see real edges.
    assert graph_cache[module], module


@pytest.fixture
def planted(tmp_path):
    """planted(relative path, line) -> the import graph of a copy of src/reslab with `line`
    appended to that module."""
    def plant(rel: str, line: str) -> dict[str, set[str]]:
        src = tmp_path / "reslab"
        shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
        with open(src / rel, "a") as f:
            f.write("\n" + line + "\n")
        return graph(src)
    return plant


def test_a_planted_import_of_the_package_root_fails_the_check(planted):
    g = planted("runs/env.py", "from reslab import __version__")
    assert "reslab.runs.env imports reslab (runs -> __init__)" in upward_imports(g)


def test_a_planted_dynamic_upward_import_fails_the_check(planted):
    g = planted("data/sources.py", 'importlib.import_module("reslab.report.html")')
    assert "reslab.data.sources imports reslab.report.html (data -> report)" in \
        upward_imports(g)


def test_a_planted_cycle_through_the_root_fails_the_check(planted):
    g = planted("errors.py", "import reslab")  # the root reaches errors through its lazy API
    assert import_cycle(g) is not None


MAX_FUNCTION_LINES = 80  # a screen (ARCHITECTURE.md says why not 50)


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


# Things that must exist in one place only; where each is allowed and why.
ONE_PLACE = {
    # The run executor's process pool; the sweep's workers pop trials that Optuna's sampler
    # creates as results arrive, so they keep their own loop over the same `spawn`.
    r"multiprocessing\.get_context\(": {"execute/local.py", "sweep/workers.py"},
    # Optuna's private API, fenced behind one module with a contract test.
    r"\._storage\b|\._trial_id\b": {"sweep/optuna_private.py"},
    r"def (_)?is_number\b": {"formatting.py"},
}


@pytest.mark.parametrize("pattern", list(ONE_PLACE))
def test_what_exists_once_stays_in_its_place(pattern):
    found = {str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
             if re.search(pattern, path.read_text())}
    assert found == ONE_PLACE[pattern]
