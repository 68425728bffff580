"""One run, by the one rule every multi-run command follows.

Under the run's claim (runs/claim.py: one writer per run directory):
- finished (result.json) with the same config -> reused;
- started (last.pt) with the same config -> resumed from its last checkpoint;
- neither -> trained from scratch (a run killed before its first checkpoint starts over);
- a different config -> refused in one line naming the first key that differs.
A run claimed by a live process elsewhere is left alone ('busy'): the executor comes back to
it. After training, the hooks: the run's report (train.report) and its robustness rows.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from ..config import load_config
from ..errors import ReslabError
from ..evaluate.robustness import run_robustness, suite_levels
from ..report import write_report
from ..report.plots import plot_robustness
from ..runs.checkpoint import first_line
from ..runs.claim import RunClaim, RunClaimed
from ..runs.rundir import RunDir, claim_dir
from ..training import run_training
from ..utils import os_error_line
from .spec import Outcome, RunSpec, first_difference

Log = Callable[[str], None]


def run_one(spec: RunSpec, quiet: bool = False, log: Log | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> Outcome:
    """Have `spec` finished -> its Outcome; bad input raises ReslabError."""
    log = log or (lambda line: None)
    run = RunDir(claim_dir(spec.path, "run"))
    device = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        claim = run.take_claim()
    except RunClaimed as err:
        return Outcome(spec.name, "busy", str(err), device, err.holder.describe())
    with claim:
        status = train_or_reuse(spec, run, claim, quiet, log, on_epoch)
        if status != "reused" and run.read_config().train.report:
            write_run_report(run, quiet=True)
        if spec.robustness is not None:
            ensure_robustness(run, *spec.robustness, log=log)
    return Outcome(spec.name, status, "", device)


def train_or_reuse(spec: RunSpec, run: RunDir, claim: RunClaim, quiet: bool, log: Log,
                   on_epoch: Callable[[dict], None] | None) -> str:
    if run.result.is_file() or run.has_started():
        require_same_config(run, spec)
    if run.result.is_file():
        log(f"{spec.name}: finished run in {run.path}, reused")
        return "reused"
    if run.has_started():
        log(f"{spec.name}: resuming {run.path}")
        run_training(resume=run.path, on_epoch=on_epoch, quiet=quiet, claim=claim)
        return "resumed"
    log(f"{spec.name}: training into {run.path}")
    run_training(load_config(spec.config), out=run.path, on_epoch=on_epoch, quiet=quiet,
                 claim=claim)
    return "trained"


def require_same_config(run: RunDir, spec: RunSpec) -> None:
    """Refuse a run trained with another config than its spec gives now: reusing or resuming
    it would mix two experiments under one name. Execution settings may differ."""
    found = first_difference(run.read_config().to_dict(), load_config(spec.config).to_dict())
    if found is not None:
        key, old, new = found
        raise ReslabError(f"{run.path} was trained with {key} = {old!r:.80}, the config now "
                          f"gives {new!r:.80}; choose another output directory or delete "
                          f"{run.path}")


def run_one_safely(spec: RunSpec, quiet: bool = False) -> Outcome:
    """run_one in a worker (a process or a Ray task): errors become a failed Outcome, so the
    executor reports them in one line instead of losing the worker."""
    try:
        return run_one(spec, quiet=quiet)
    except ReslabError as err:
        return Outcome(spec.name, "failed", str(err), os.environ.get("CUDA_VISIBLE_DEVICES"),
                       exit_code=err.exit_code)
    except OSError as err:  # a full disk, a read-only folder: one line, as the CLI says it
        return Outcome(spec.name, "failed", os_error_line(err))
    except Exception as err:  # noqa: BLE001 - a bug or OOM: its traceback helps, once
        traceback.print_exc(file=sys.stderr)
        return Outcome(spec.name, "failed", f"{type(err).__name__}: {first_line(err)}",
                       exit_code=1)


# ----------------------------------------------------------------------------- hooks
def write_run_report(run: RunDir, quiet: bool = False) -> None:
    """The HTML report is a convenience: a failure to draw it must not fail the run."""
    try:
        html, _ = write_report(run.path)
    except Exception as err:  # noqa: BLE001
        print(f"warning: report not written ({first_line(err)})", file=sys.stderr)
        return
    if not quiet:
        print(f"Report: {html}")


def ensure_robustness(run: RunDir, suite: str, raw: bool = False, log: Log | None = None
                      ) -> None:
    """Robustness rows for the suite in the wanted mode; rows made in another mode are
    recomputed, never mixed in."""
    mode = "raw" if raw else "display"
    wanted = {(n, s) for n, s, _ in suite_levels(suite)}
    have = {(r["perturbation"], r["severity"]) for r in run.read_robustness()
            if r["mode"] == mode}
    if wanted <= have:
        return
    if log is not None:
        log(f"{run.path.name}: robustness ({suite} suite, {mode})")
    rows = run_robustness(run.path, suite=suite, raw=raw)
    plot_robustness(rows, run.robustness_plot(mode))
