"""`reslab` command line. Each command lives in its own module in this package and defines
`add_parser(subparsers)` and `run(args) -> int`. COMMANDS lists them, in the order `reslab
--help` shows them; only the module of the command being run is imported (so `reslab --help`
and a command's start do not pay for the others' imports)."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import threading

from ..errors import ReslabError
from ..output import command_named
from ..utils import os_error_line

# name: (module in this package, the one line `reslab --help` shows)
COMMANDS = {
    "train": ("train", "train a model from a config into a run directory"),
    "eval": ("eval", "evaluate a trained run on a split or a labeled folder"),
    "predict": ("predict", "predict class names for a folder of images"),
    "summary": ("summary", "layers, output shapes, parameters and FLOPs of a config's model"),
    "data": ("data", "dataset overview: counts, sizes, formats, statistics, sample grids"),
    "demo": ("demo", "the whole study in miniature on the bundled digits"),
    "sweep": ("sweep", "run a hyperparameter sweep (grid, random, tpe, ofat) with Optuna"),
    "robustness": ("robustness", "accuracy of a trained run under image perturbations"),
    "compare": ("compare", "train several configs on the same data and compare them"),
    "study": ("study", "run a study: variants x (sweep, confirm, test, robustness), tables"),
    "convert": ("convert", "convert an image tree between sRGB PNG, linear TIFF and log EXR"),
    "report": ("report", "write the HTML + Markdown report of any directory reslab wrote"),
    "lr-find": ("lr_find", "LR range test: suggest a learning rate for a config"),
    "export": ("export", "export a run's model to ONNX, TorchScript or safetensors"),
    "config": ("config", "print the resolved config train would run, or every key's default"),
    "completion": ("completion", "print a bash or zsh completion script for reslab"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command's arguments, or only `command`'s (the others listed
    by name and help line)."""
    parser = argparse.ArgumentParser(prog="reslab", description="Train, sweep, compare and "
                                     "report ResNet image classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_line) in COMMANDS.items():
        if command not in (None, name):
            sub.add_parser(name, help=help_line)
            continue
        module = importlib.import_module(f"{__name__}.{module_name}")
        module.add_parser(sub).set_defaults(_run=module.run, _exit_at_once=getattr(
            module, "EXIT_AT_ONCE", False))
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command named on the line ('' when none is: only the listing is needed)."""
    return next((a for a in argv if not a.startswith("-")), "")


def installed_version() -> str:
    """The installed distribution's version (its metadata, what pip reports)."""
    try:
        return importlib.metadata.version("reslab")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run a command; as the `reslab` program itself (argv None), also end the process as
    soon as the command is done (`exit_promptly`)."""
    args = build_parser(command_of(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    with command_named(args.command):
        return run_command(args, as_program=argv is None)


def run_command(args: argparse.Namespace, as_program: bool) -> int:
    """The command's exit code; bad input, OS errors and Ctrl-C as one line each."""
    try:
        code = int(args._run(args) or 0)
        if as_program:
            exit_promptly(code, getattr(args, "_exit_at_once", False))
        return code
    except ReslabError as err:
        print(f"reslab {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a full disk, a read-only or missing folder, a file given as one
        print(f"reslab {args.command}: error: {one_line(os_error_line(err))}", file=sys.stderr)
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


def one_line(message: str) -> str:
    """The message on one line: a newline or carriage return inside a name (a class folder
    named with one) is shown escaped, as repr() would, instead of splitting the line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


if __name__ == "__main__":
    sys.exit(main())
