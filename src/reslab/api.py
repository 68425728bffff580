"""The Python API: what `reslab train` does, callable from code."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import training
from .config import load_config
from .errors import ReslabError
from .report import write_report
from .runs.checkpoint import first_line
from .runs.rundir import RepeatsDir, RunDir
from .training.repeats import is_fan_out, resume_repeats, run_repeats, summary_line
from .training.tracking import log_report_artifacts, trackers


def train(config=None, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, on_epoch: Callable[[dict], None] | None = None,
          quiet: bool = False, repeats: int | None = None, folds: int | None = None) -> dict:
    """Train a config (YAML path, mapping or Config) into a run directory and write its report
    (`train.report`); returns result.json's contents.

    A fan-out: `repeats` N (seeds train.seed .. +N-1), `folds` K (folds 0..K-1), or a config
    that names several runs itself (a train.seed list; data.folds without data.fold), trains
    each run into OUT/seed-K/ or OUT/fold-i/ and returns summary.json's contents instead
    ({metric: {mean, std, ci95_low, ci95_high, n, values}}); `resume` of such a directory
    continues it, reusing the finished runs.
    """
    if resume is not None and RepeatsDir(resume).plan_yaml.is_file():
        if repeats is not None or folds is not None:
            raise ReslabError("--repeats/--folds go with CONFIG; --resume continues the plan "
                               f"in {resume}/repeats.yaml as it is")
        return _fan_out(resume_repeats, resume, on_epoch=on_epoch, quiet=quiet)
    if resume is None and is_fan_out(load_config(config, overrides), repeats, folds):
        return _fan_out(run_repeats, config, out=out, repeats=repeats, folds=folds,
                        overrides=overrides, on_epoch=on_epoch, quiet=quiet)
    if repeats is not None or folds is not None:
        raise ReslabError("--repeats/--folds go with CONFIG, not with --resume of one run")
    run, result = training.run_training(config, out, resume, overrides, on_epoch, quiet)
    cfg = run.read_config()
    if int(os.environ.get("RANK", "0")) == 0 and cfg.train.report:
        write_run_report(run, quiet)
        if "mlflow" in trackers(cfg):
            log_report_artifacts(run.path)
    return result


def train_repeats(config=None, out: str | Path | None = None, repeats: int | None = None,
                  folds: int | None = None, **kwargs) -> dict:
    """`train` as a fan-out even for one seed: always a repeats directory, always the summary
    (`repeats` defaults to 1: just train.seed, or each seed of a train.seed list)."""
    return _fan_out(run_repeats, config, out=out, repeats=repeats, folds=folds, **kwargs)


def _fan_out(start: Callable, *args, quiet: bool = False, **kwargs) -> dict:
    log = (lambda line: None) if quiet else print
    target, summary = start(*args, quiet=quiet, log=log,
                            after_run=lambda run: _member_report(run, quiet), **kwargs)
    if target.read_plan().train.report:
        write_run_report(target, quiet)
    log(summary_line(summary, target.path))
    return summary


def _member_report(run: RunDir, quiet: bool) -> None:
    if run.read_config().train.report:
        write_run_report(run, quiet=True)


def write_run_report(run: RunDir | RepeatsDir, quiet: bool = False) -> None:
    """The HTML report is a convenience: a failure to draw it must not fail the run."""
    try:
        html, _ = write_report(run.path)
    except Exception as err:  # noqa: BLE001
        print(f"warning: report not written ({first_line(err)})", file=sys.stderr)
        return
    if not quiet:
        print(f"Report: {html}")
