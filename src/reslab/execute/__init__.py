"""The run executor: every command that trains many runs plans RunSpecs and hands them here.

`execute(specs, options)` has each run finished by one rule (run_one.py: reuse, resume, train
or refuse, under the run's claim), on this process, on local worker processes (one per
listed GPU, or CPU workers) or on a Ray cluster. Planners above it: fan-outs of one config
(repeats.py, here: the simplest plan), sweeps (trials, confirmation), compare and study.
"""
from .executor import check_options, execute
from .runner import ensure_robustness, run_one, write_run_report
from .spec import ExecOptions, Outcome, RunSpec

__all__ = ["ExecOptions", "Outcome", "RunSpec", "check_options", "ensure_robustness",
           "execute", "run_one", "write_run_report"]
