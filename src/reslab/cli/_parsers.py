"""Shared pieces of the command modules: parsers and terminal tables."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..formatting import reads_as_number


def command_parser(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help prints its description with the line breaks it was written
    with (a key list, a file layout)."""
    return sub.add_parser(name, help=help, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_set_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=0.01 (repeatable; a path "
                   "is relative to the current folder, a config file's to the file)")


def add_executor_flags(p: argparse.ArgumentParser, what: str = "runs") -> None:
    """The flags of every command that trains many runs (reslab.execute)."""
    g = p.add_argument_group("where the runs train (README: Many runs)")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help=f"{what} at once on this machine (default 1; CPU cores are split "
                   "between them)")
    g.add_argument("--gpus", metavar="0,1,...",
                   help="one worker per listed GPU (CUDA_VISIBLE_DEVICES); default on a CUDA "
                   "machine: every visible GPU")
    g.add_argument("--runs-per-gpu", type=int, default=1, metavar="K",
                   help="workers per GPU, for small models that leave a GPU idle (default 1)")
    g.add_argument("--executor", default="local", metavar="local|ray|ray://HOST:PORT",
                   help="local worker processes (default), or a Ray cluster (address from "
                   "RAY_ADDRESS or ray://HOST:PORT; needs reslab[ray])")


def exec_options(args: argparse.Namespace):
    """The executor flags, checked (GPUs exist, the Ray cluster answers) before any work."""
    from ..execute import ExecOptions, check_options
    from ..execute.slots import parse_gpus

    options = ExecOptions(workers=args.workers, gpus=parse_gpus(args.gpus),
                          runs_per_gpu=args.runs_per_gpu, executor=args.executor,
                          quiet=getattr(args, "quiet", False))
    check_options(options)
    return options


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
    right = [bool(rows) and all(reads_as_number(c) for c in col[1:]) for col in columns]
    for line in [headers, *rows]:
        cells = [str(c).rjust(w) if r else str(c).ljust(w)
                 for c, w, r in zip(line, widths, right)]
        print("  ".join(cells).rstrip())


