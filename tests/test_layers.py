"""The import graph is the data flow: packages only import layers below them, no modules
import each other in a cycle, and no function is longer than a screen. The layers are the
diagram in ARCHITECTURE.md."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"

# Lower numbers are lower layers; a unit may import only units of a lower number (and itself).
LAYERS = {
    "errors": 0, "utils": 1, "progress": 1, "config": 2, "config_reference": 2, "stats": 2,
    "data": 3, "models": 3,
    "runs": 4,
    "training": 5, "evaluate": 5, "report": 5,
    "sweep": 6,
    "studies": 7,
    "api": 8, "cli": 9, "__main__": 10,
}
ROOT = "__init__"  # the package root: version, thin lazy API wrappers; importable by all


def unit_of(module: str) -> str:
    """'reslab.training.loop' -> 'training'; 'reslab' -> the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the reslab modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
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
                found.add(sub if is_module(sub) else target)
    return found


def is_module(name: str) -> bool:
    path = SRC.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in graph()} - {ROOT}
    assert units <= set(LAYERS), f"add to LAYERS and ARCHITECTURE.md: {units - set(LAYERS)}"


def test_packages_only_import_lower_layers():
    upward = []
    for module, targets in graph().items():
        here = unit_of(module)
        for target in targets:
            there = unit_of(target)
            if there in (here, ROOT) or here == ROOT:
                continue
            if LAYERS[there] >= LAYERS[here]:
                upward.append(f"{module} imports {target} ({here} -> {there})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_no_module_import_cycles():
    # The package root is left out: its lazy API wrappers import on first call, not at import.
    edges = {m: {t for t in ts if t in graph_cache and t not in (m, "reslab")}
             for m, ts in graph_cache.items() if m != "reslab"}
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
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


graph_cache = graph()


@pytest.mark.parametrize("module", ["reslab.data.augment", "reslab.training.loop"])
def test_the_checker_sees_imports(module):
    # A checker that finds nothing would pass everything: it must see real edges.
    assert graph_cache[module], module


MAX_FUNCTION_LINES = 50


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 50 lines:\n" + "\n".join(long)
