"""reslab's one output channel: the `reslab` logger. Every line a command or the library shows
goes through it -- progress with `info`, side remarks with `note`, problems with `warn` -- and
one handler decides what a terminal shows: info lines on stdout as they are; notes on stderr as
they are (what was loaded, which fallback was taken: kept out of a command's results, e.g.
`eval --json`); warnings on stderr as `reslab COMMAND: warning: ...`. No Python
`warnings.warn` (a source line a user cannot act on).

As Optuna does for its own logger, the handler is installed when this module is imported, so
a notebook calling `reslab.train` sees the lines the CLI shows; configure it like any logger:
`logging.getLogger("reslab").setLevel(logging.WARNING)` keeps only warnings, and
`remove_terminal_handler()` hands the lines to the root logger's handlers instead."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger("reslab")
# The command being run, for the warning prefix; in the environment so that spawned workers
# (which import this module afresh) prefix their warnings the same way.
COMMAND_ENV = "RESLAB_COMMAND"
NOTE = 25  # between INFO and WARNING: shown on stderr, without the warning prefix
logging.addLevelName(NOTE, "NOTE")


class TerminalHandler(logging.Handler):
    """One line per record on the sys.stdout / sys.stderr of the moment (a redirect, pytest's
    capture), flushed at once so that lines of parallel workers interleave whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
            if record.levelno >= logging.WARNING:
                line = f"{prefix()}: {record.levelname.lower()}: {line}"
            stream = sys.stdout if record.levelno < NOTE else sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 -- logging's contract: report, never raise
            self.handleError(record)


def prefix() -> str:
    command = os.environ.get(COMMAND_ENV)
    return f"reslab {command}" if command else "reslab"


@contextmanager
def command_named(name: str) -> Iterator[None]:
    """Name `name` in warning lines while a command runs (the CLI's `main`); restored after,
    so a library call made later in the same process (a test, a notebook) is not named."""
    saved = os.environ.get(COMMAND_ENV)
    os.environ[COMMAND_ENV] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(COMMAND_ENV, None)
        else:
            os.environ[COMMAND_ENV] = saved


def info(line: str) -> None:
    LOGGER.info(line)


def note(line: str) -> None:
    LOGGER.log(NOTE, line)


def warn(line: str) -> None:
    LOGGER.warning(line)


def remove_terminal_handler() -> None:
    for handler in [h for h in LOGGER.handlers if isinstance(h, TerminalHandler)]:
        LOGGER.removeHandler(handler)
    LOGGER.propagate = True


if not any(isinstance(h, TerminalHandler) for h in LOGGER.handlers):
    LOGGER.addHandler(TerminalHandler())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
