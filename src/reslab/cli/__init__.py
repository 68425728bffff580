"""`reslab` command line. Each command lives in its own module in this package and defines
`add_parser(subparsers)` and `run(args) -> int`; commands are discovered, not listed here."""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
import threading

from ..errors import ReslabError

ORDER = ["train", "eval", "predict", "summary", "data", "demo", "sweep", "robustness", "compare",
         "study", "convert", "report", "lr_find", "export"]


def _command_modules() -> list:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"{__name__}.{n}") for n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reslab", description="Train, sweep, compare and "
                                     "report ResNet image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.add_parser(sub).set_defaults(_run=module.run, _exit_at_once=getattr(
            module, "EXIT_AT_ONCE", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; as the `reslab` program itself (argv None), also end the process as
    soon as the command is done (`exit_promptly`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args._run(args) or 0)
        if argv is None:
            exit_promptly(code, getattr(args, "_exit_at_once", False))
        return code
    except ReslabError as err:
        print(f"reslab {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a full disk, a read-only or missing folder, a file given as one
        print(f"reslab {args.command}: error: {os_error_line(err)}", file=sys.stderr)
        return ReslabError.exit_code
    except KeyboardInterrupt:
        print(f"reslab {args.command}: interrupted", file=sys.stderr)
        return 130


def exit_promptly(code: int, at_once: bool) -> None:
    """End the process now when a library left something that would keep it alive after the
    command's work is done: a non-daemon thread (interpreter exit joins it), or, for commands
    that set EXIT_AT_ONCE (export: onnxruntime's thread pools), native teardown at exit.
    Everything the command wrote is on disk already (atomic writes); stdout/stderr are flushed."""
    lingering = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if lingering or at_once:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def os_error_line(err: OSError) -> str:
    """One line naming what failed and where: "no space left on device writing runs/x"."""
    where = " ".join(str(f) for f in (err.filename, err.filename2) if f)
    what = "no space left on device" if err.errno == errno.ENOSPC else \
        (err.strerror or str(err)).lower()
    return f"{what}{': ' + where if where else ''}"


if __name__ == "__main__":
    sys.exit(main())
