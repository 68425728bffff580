"""Packaging: `make demo` installs reslab without the dev extra, every third-party package
src/ imports is declared (a dependency or an extra), and the licence is MIT."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Import names whose distribution is named otherwise, for packages not installed here.
NOT_INSTALLED = {"wandb": "wandb", "airbench": "airbench", "mlflow": "mlflow-skinny",
                 "pandas": "pandas"}


def make_rules() -> dict[str, tuple[list[str], list[str]]]:
    """target -> (prerequisites, recipe lines) of the Makefile, its variables expanded."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+) := (.+)$", text, flags=re.M))
    for _ in range(3):  # STAMP := $(VENV)/.installed: expand nested variables too
        for name, value in variables.items():
            text = text.replace(f"$({name})", value)
    rules, current = {}, None
    for line in text.splitlines():
        if line.startswith("\t") and current:
            rules[current][1].append(line.strip())
        elif re.match(r"^[\w./-]+:(?!=)", line):
            target, _, deps = line.partition(":")
            current = target.strip()
            rules[current] = (deps.split(), [])
        else:
            current = None
    return rules


def installs(rules, target: str) -> list[str]:
    """The pip install lines `make target` runs, its prerequisites' included."""
    deps, recipe = rules.get(target, ([], []))
    return [r for r in recipe if "pip install" in r] + \
        [line for dep in deps for line in installs(rules, dep)]


def test_make_demo_does_not_install_the_dev_extra():
    rules = make_rules()
    demo = installs(rules, "demo")
    assert demo and all("dev" not in line for line in demo), demo
    assert any("[dev]" in line for line in installs(rules, "test"))


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values()
                                       for s in extra]
    return {normalise(re.split(r"[<>=!\[; ]", s, maxsplit=1)[0]) for s in specs}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> set[str]:
    found = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"reslab", "__future__"}


def test_every_imported_package_is_declared():
    owners = importlib.metadata.packages_distributions()
    names = declared()
    undeclared = []
    for module in sorted(imported_modules()):
        dists = owners.get(module) or [NOT_INSTALLED.get(module, module)]
        if not any(normalise(d) in names for d in dists):
            undeclared.append(f"{module} ({', '.join(dists)})")
    assert undeclared == []


def test_mit_license():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
