"""Number tests and table text shared by every command that prints or writes tables."""
from __future__ import annotations

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
