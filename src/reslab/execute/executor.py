"""`execute(specs, options)`: have every run finished, on this machine's workers or on Ray.

Both backends share one schedule (schedule.py). Failed runs do not stop the others; `execute`
raises one line naming them once everything else has finished.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ReslabError
from .runner import run_one
from .schedule import BUSY_POLL_S, Log, Schedule
from .slots import worker_slots
from .spec import ExecOptions, Outcome, RunSpec


def execute(specs: list[RunSpec], options: ExecOptions | None = None, log: Log | None = None,
            on_epoch: Callable[[dict], None] | None = None, check: bool = True
            ) -> dict[str, Outcome]:
    """Finish every spec -> {name: Outcome}; with `check`, raises one ReslabError if any run
    failed (after the others have finished)."""
    log = log or (lambda line: None)
    options = options or ExecOptions()
    schedule = Schedule(specs, log)
    if options.executor != "local":
        from .ray_backend import run_on_ray

        run_on_ray(schedule, options, log)
    else:
        slots = worker_slots(options)
        if slots == [{}] and not options.isolate:
            run_here(schedule, options.quiet, log, on_epoch)
        else:
            from .local import run_on_workers

            run_on_workers(schedule, slots, options.quiet, log)
    if check:
        raise_failures(schedule.outcomes)
    return schedule.outcomes


def check_options(options: ExecOptions) -> None:
    """Refuse bad executor flags in one line before any work starts."""
    if options.executor == "local":
        worker_slots(options)
    else:
        from .ray_backend import check_address

        check_address(options)


def run_here(schedule: Schedule, quiet: bool, log: Log,
             on_epoch: Callable[[dict], None] | None) -> None:
    """One worker: each run in this process, in order (errors propagate as they are)."""
    while not schedule.done():
        spec = schedule.take_ready()
        if spec is None:
            time.sleep(schedule.next_start() or BUSY_POLL_S)
            continue
        schedule.finish(spec, run_one(spec, quiet=quiet, log=log, on_epoch=on_epoch))


def raise_failures(outcomes: dict[str, Outcome]) -> None:
    failed = [o for o in outcomes.values() if o.status == "failed"]
    if not failed:
        return
    first = failed[0]
    more = f" (and {len(failed) - 1} more run(s) failed; see above)" if len(failed) > 1 else ""
    err = ReslabError(f"run {first.name}: {first.detail}{more}")
    err.exit_code = max(o.exit_code for o in failed)
    raise err
