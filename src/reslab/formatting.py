"""Number tests and table text shared by every command that prints or writes tables: the one
writer of Markdown tables."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def is_number(value: Any) -> bool:
    """A real number (int or float, not a bool): what a table right-aligns and averages."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reads_as_number(text: Any) -> bool:
    """Text that parses as a number ('0.95', '1,234', 'nan'): a cell of a printed table."""
    try:
        float(str(text).replace(",", ""))
    except ValueError:
        return False
    return True


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]],
                   right: Sequence[bool] | None = None) -> str:
    """A GitHub Markdown table (lines joined, no trailing newline). `right`: per column,
    right-aligned; by default the columns whose every cell reads as a number."""
    if right is None:
        right = [bool(rows) and all(reads_as_number(r[k]) for r in rows)
                 for k in range(len(headers))]
    rule = "|" + "|".join("---:" if r else "---" for r in right) + "|"
    return "\n".join([_markdown_row(headers), rule, *(_markdown_row(r) for r in rows)])


def markdown_cell(value: Any) -> str:
    """A cell's text: a `|` escaped and a line break made a space, so the row stays one row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"
