"""One owner per artifact: every file name of a reslab directory (run, sweep, comparison,
repeats, study, data, LR finder) is spelled in runs/rundir.py and nowhere else in reslab; the
others read and write through its classes, so a renamed file cannot leave a stale copy of its
name behind (ARCHITECTURE.md, "The directories")."""
from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "reslab"
RUNDIR = Path("runs") / "rundir.py"
FILE_NAME = re.compile(r"[\w-]+(\.[\w-]+)*\.(json|jsonl|csv|md|pt|png|html|yaml|txt|db|npz|tex)")


def string_constants(tree: ast.AST) -> Iterator[ast.Constant]:
    """Every str constant, f-strings' literal parts included, docstrings left out (prose
    names the files it is about)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node


def defined_names(src: Path = SRC) -> set[str]:
    """The file names rundir.py spells: its constants that are file names, and the figures it
    names through Directory.plot (plots/<name>.png)."""
    tree = ast.parse((src / RUNDIR).read_text())
    names = {c.value for c in string_constants(tree) if FILE_NAME.fullmatch(c.value)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "plot":
            names |= {f"{c.value}.png" for arg in node.args for c in string_constants(arg)}
    return names


def spelled_elsewhere(src: Path = SRC) -> list[str]:
    """'module:line 'constant'' for each str constant outside rundir.py that is one of its
    file names, alone or as the last part of a path ('plots/robustness.png')."""
    names = defined_names(src)
    found = []
    for path in sorted(src.rglob("*.py")):
        if path == src / RUNDIR:
            continue
        for const in string_constants(ast.parse(path.read_text())):
            if const.value.rsplit("/", 1)[-1] in names:
                found.append(f"{path.relative_to(src)}:{const.lineno} {const.value!r}")
    return found


def test_the_checker_knows_the_directories_files():
    # A checker that collects nothing would pass everything.
    assert {"result.json", "metrics.jsonl", "best.pt", "compare.csv", "study.txt",
            "report.html", "robustness.csv", "robustness-raw.md", "robustness.png",
            "robustness-raw.png", "mean_curves.png", "summary.json", "study.yaml",
            "data.json", "lr_find.json"} <= defined_names()


def test_no_module_but_rundir_spells_a_directory_file_name():
    found = spelled_elsewhere()
    assert not found, "use runs/rundir.py's classes instead:\n" + "\n".join(found)


@pytest.mark.parametrize(("line", "expected"), [
    ('RESULT = "result.json"', "'result.json'"),
    ('FIGURE = Path("out") / "plots" / "robustness.png"', "'robustness.png'"),
    ('NAME = f"{RESULT}/compare.csv"', "'/compare.csv'"),
    ('TABLE = "plots/mean_curves.png"', "'plots/mean_curves.png'"),
])
def test_a_planted_file_name_fails_the_check(tmp_path, line, expected):
    src = tmp_path / "reslab"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "cli" / "demo.py", "a") as f:
        f.write("\n" + line + "\n")
    lines = len((src / "cli" / "demo.py").read_text().splitlines())
    assert spelled_elsewhere(src) == [f"{Path('cli', 'demo.py')}:{lines} {expected}"]
