"""reslab.data sits on layer 1: the augmentation modules and the loader import only layer-0
reslab modules and reslab.data, and data's modules import each other without cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import reslab.data

DATA = Path(reslab.data.__file__).parent
LAYER0 = {"errors", "utils", "progress", "config", "stats"}
AUGMENTATION = ("affine", "augment", "augment_imagenet", "augment_policies", "color", "erasing",
                "loader", "mixup", "preview", "transforms")


def reslab_imports(path: Path) -> set[str]:
    """Dotted reslab modules a data module imports ('data.color', 'config', ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = "data" + (f".{node.module}" if node.module else "")
                names = [f"{base}.{a.name}" if not node.module else base for a in node.names]
                found.update(names)
            elif node.level == 2 or (node.module or "").startswith("reslab."):
                found.add((node.module or "").removeprefix("reslab."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("reslab.") for a in node.names
                         if a.name.startswith("reslab."))
    return found


def test_augmentation_imports_only_layer0_and_data():
    for name in AUGMENTATION:
        path = DATA / f"{name}.py"
        for mod in reslab_imports(path):
            top = mod.split(".")[0]
            assert top == "data" or top in LAYER0, f"{path.name} imports reslab.{mod}"


def test_data_modules_have_no_import_cycles():
    graph = {f"data.{p.stem}": {m for m in reslab_imports(p) if m.startswith("data.")}
             for p in DATA.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, f"import cycle through {cycles}"
