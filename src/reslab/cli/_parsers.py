"""Shared pieces of the command modules: parsers and terminal tables."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def command_parser(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help prints its description with the line breaks it was written
    with (a key list, a file layout)."""
    return sub.add_parser(name, help=help, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def show_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> None:
    """A rich table on a terminal, aligned plain text otherwise (logs, pipes, CI)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, title=title or None)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    columns = list(zip(headers, *rows))
    widths = [max(len(str(c)) for c in col) for col in columns]
    right = [bool(rows) and all(_is_number(c) for c in col[1:]) for col in columns]
    for line in [headers, *rows]:
        cells = [str(c).rjust(w) if r else str(c).ljust(w)
                 for c, w, r in zip(line, widths, right)]
        print("  ".join(cells).rstrip())


def _is_number(text: str) -> bool:
    try:
        float(str(text).replace(",", ""))
    except ValueError:
        return False
    return True
