"""`reslab` command line. Each command lives in its own module in this package and defines
`add_parser(subparsers)` and `run(args) -> int`; commands are discovered, not listed here."""
from __future__ import annotations

import argparse
import errno
import importlib
import importlib.metadata
import pkgutil
import sys

from ..errors import ReslabError

ORDER = ["train", "eval", "predict", "summary", "config", "data", "demo", "sweep", "robustness",
         "compare", "study", "convert", "report", "lr_find", "export", "completion"]


def _command_modules() -> list:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"{__name__}.{n}") for n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reslab", description="Train, sweep, compare and "
                                     "report ResNet image classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def installed_version() -> str:
    """The installed distribution's version (its metadata, what pip reports)."""
    try:
        return importlib.metadata.version("reslab")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ReslabError as err:
        print(f"reslab {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a full disk, a read-only or missing folder, a file given as one
        print(f"reslab {args.command}: error: {os_error_line(err)}", file=sys.stderr)
        return ReslabError.exit_code
    except KeyboardInterrupt:
        print(f"reslab {args.command}: interrupted", file=sys.stderr)
        return 130


def os_error_line(err: OSError) -> str:
    """One line naming what failed and where: "no space left on device writing runs/x"."""
    where = " ".join(str(f) for f in (err.filename, err.filename2) if f)
    what = "no space left on device" if err.errno == errno.ENOSPC else \
        (err.strerror or str(err)).lower()
    return f"{what}{': ' + where if where else ''}"


if __name__ == "__main__":
    sys.exit(main())
