"""Workers: pop queued trials, train them under a heartbeat, tell the study; local processes.

The loop is Optuna's `optimize()` minus trial creation: `pop_waiting` instead of `ask`, and
our own heartbeat thread (Optuna's starts only inside `optimize()`).
"""
from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import ReslabError
from .spec import Sweep
from .storage import heartbeat_interval, make_storage
from .study import fail_stale, has_running, open_study, pop_waiting
from .trial import TrialRunner

POLL_S = 1.0


class Heartbeat:
    """Records a trial's heartbeat every `interval` s while the trial trains."""

    def __init__(self, trial: optuna.Trial, interval: int | None):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.interval:
            self._beat()  # a trial with no beat yet is never considered stale
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"heartbeat-{self.trial.number}")
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # a transient DB error must not kill the trial; next beat retries
                pass

    def _beat(self) -> None:
        self.trial.storage.record_heartbeat(self.trial._trial_id)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def work(study: optuna.Study, runner: TrialRunner) -> int:
    """Run queued trials until the queue is empty; returns how many this worker ran.

    With a heartbeat, also wait while other trials are RUNNING: if their worker died they are
    failed after the grace period and re-queued, and someone has to pick them up.
    """
    interval = heartbeat_interval(study._storage)
    runner.warm_up()
    ran = 0
    while True:
        fail_stale(study)
        trial = pop_waiting(study)
        if trial is None:
            if interval is None or not has_running(study):
                return ran
            time.sleep(min(POLL_S, interval))
            continue
        run_one(study, trial, runner, interval)
        ran += 1


def run_one(study: optuna.Study, trial: optuna.Trial, runner: TrialRunner,
            interval: int | None) -> None:
    with Heartbeat(trial, interval):
        try:
            state, value = runner(study, trial)
        except ReslabError as err:
            # Bad input (data missing, bad config): every other trial would fail the same way.
            _fail(study, trial, err)
            raise
        except Exception as err:  # e.g. out of memory: this trial fails, the sweep goes on
            _fail(study, trial, err)
            print(f"reslab sweep: trial {trial.number} failed: {_one_line(err)}", file=sys.stderr)
            return
        except BaseException as err:  # KeyboardInterrupt: leave nothing RUNNING
            _fail(study, trial, err)
            raise
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


def _fail(study: optuna.Study, trial: optuna.Trial, err: BaseException) -> None:
    # "error", not "reason": the point stays unclaimed and the next run retries it.
    try:
        trial.set_user_attr("error", _one_line(err))
        study.tell(trial, state=TrialState.FAIL)
    except Exception:
        pass  # the storage itself is gone; the heartbeat will fail the trial instead


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@dataclass
class WorkerJob:
    sweep: Sweep
    sweep_dir: Path
    url: str
    study_name: str
    threads: int | None


def worker_main(job: WorkerJob, index: int) -> None:
    """Entry point of a local worker process."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = make_storage(job.url, job.sweep.spec.heartbeat)
        study = open_study(job.sweep, storage, job.study_name, worker=index)
        work(study, TrialRunner(job.sweep, job.sweep_dir, job.threads))
    except ReslabError as err:
        print(f"reslab sweep: error: worker {index}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_processes(job: WorkerJob, n: int) -> None:
    """Run n workers as spawned processes (fork would copy torch's thread pools and locks)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(job, i), name=f"reslab-sweep-worker-{i}")
             for i in range(n)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the workers too; give them a moment to record it.
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    failed = [f"worker {i}: exit code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode]
    if failed:
        raise ReslabError("; ".join(failed) + " (see the messages above)")
