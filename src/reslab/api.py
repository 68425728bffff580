"""The Python API: what `reslab train` does, callable from code."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import training
from .report import write_report
from .runs.checkpoint import first_line
from .runs.rundir import RunDir


def train(config=None, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, on_epoch: Callable[[dict], None] | None = None,
          quiet: bool = False) -> dict:
    """Train a config (YAML path, mapping or Config) into a run directory and write its report
    (`train.report`); returns result.json's contents."""
    run, result = training.run_training(config, out, resume, overrides, on_epoch, quiet)
    if int(os.environ.get("RANK", "0")) == 0 and run.read_config().train.report:
        write_run_report(run, quiet)
    return result


def write_run_report(run: RunDir, quiet: bool = False) -> None:
    """The HTML report is a convenience: a failure to draw it must not fail the run."""
    try:
        html, _ = write_report(run.path)
    except Exception as err:  # noqa: BLE001
        print(f"warning: report not written ({first_line(err)})", file=sys.stderr)
        return
    if not quiet:
        print(f"Report: {html}")
