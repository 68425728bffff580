"""Progress bars (rich), shown on a terminal or in a Jupyter notebook (rich draws them as a
live widget there), never in logs, pipes or CI output."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def in_notebook() -> bool:
    """Running in a Jupyter kernel (IPython's ZMQ shell), where stderr is no terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") \
        else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    return sys.stderr.isatty() or in_notebook()


def progress_enabled(setting: bool | None = None) -> bool:
    return interactive() if setting is None else setting


def track(items: Iterable[T], total: int | None = None, description: str = "",
          enabled: bool | None = True) -> Iterator[T]:
    if not (enabled and interactive()):
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
