import ast
from pathlib import Path

from reslab.formatting import markdown_table

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"


def test_markdown_table_escapes_cells_and_right_aligns_number_columns():
    text = markdown_table(["name", "acc"], [["a|b", "0.5"], ["two\nlines", "1,234"]])
    assert text.splitlines() == ["| name | acc |", "|---|---:|", "| a\\|b | 0.5 |",
                                 "| two lines | 1,234 |"]


def test_markdown_table_alignment_can_be_given_and_empty_tables_have_a_rule():
    assert markdown_table(["x", "y"], [[1, 2]], [False, False]).splitlines()[1] == "|---|---|"
    assert markdown_table(["x"], []) == "| x |\n|---|"


def test_only_formatting_spells_a_markdown_table_rule():
    spelled = []
    for path in SRC.rglob("*.py"):
        if path.name == "formatting.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and ("|---" in node.value or "---|" in node.value):
                spelled.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not spelled, spelled
