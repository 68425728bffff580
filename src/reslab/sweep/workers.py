"""Workers: pop queued trials, train them under a heartbeat, tell the study; local processes.

The loop is Optuna's `optimize()` minus trial creation: `pop_waiting` instead of `ask`, and
our own heartbeat thread (Optuna's starts only inside `optimize()`).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..errors import ReslabError
from ..execute.local import exit_with_parent, spawn
from ..output import warn
from ..runs.rundir import SweepDir
from .optuna_private import study_storage, trial_id
from .spec import Sweep
from .stale import WaitNotice
from .storage import heartbeat_interval, is_storage_failure, make_storage, storage_errors
from .study import fail_stale, has_running, open_study, pop_waiting
from .trial import TrialRunner

POLL_S = 1.0


class Heartbeat:
    """Records a trial's heartbeat every `interval` s while the trial trains."""

    def __init__(self, trial: optuna.Trial, interval: int | None):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
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
        self.trial.storage.record_heartbeat(trial_id(self.trial))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def work(study: optuna.Study, runner: TrialRunner) -> int:
    """Run queued trials until the queue is empty; returns how many this worker ran.

    With a heartbeat, also wait while other trials are RUNNING: if their worker died they are
    failed after the grace period and re-queued, and someone has to pick them up.
    """
    interval = heartbeat_interval(study_storage(study))
    runner.warm_up()
    notice = WaitNotice(grace_period(study_storage(study)))
    ran = 0
    while True:
        fail_stale(study)
        trial = pop_waiting(study)
        if trial is None:
            if interval is None or not has_running(study):
                return ran
            notice(study)  # one line every 30 s: what this worker waits for, until when
            time.sleep(min(POLL_S, interval))
            continue
        notice.reset()
        run_one(study, trial, runner, interval)
        ran += 1


def grace_period(storage) -> float | None:
    """Seconds without a heartbeat after which a RUNNING trial is failed (Optuna's default:
    twice the interval); None without a heartbeat."""
    interval = heartbeat_interval(storage)
    if interval is None:
        return None
    grace = getattr(getattr(storage, "_backend", storage), "grace_period", None)
    return float(grace or 2 * interval)


def run_one(study: optuna.Study, trial: optuna.Trial, runner: TrialRunner,
            interval: int | None) -> None:
    trial.set_user_attr("worker", worker_id())  # whose trial it is, should this process die
    with Heartbeat(trial, interval):
        try:
            state, value = runner(study, trial)
        except ReslabError as err:
            # Bad input (data missing, bad config): every other trial would fail the same way.
            _fail(study, trial, err)
            raise
        except Exception as err:  # e.g. out of memory: this trial fails, the sweep goes on
            if is_storage_failure(err):
                raise  # not the trial's fault: worker_main reports it in one line
            _fail(study, trial, err)
            warn(f"trial {trial.number} failed: {_one_line(err)}")
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
    sweep_dir: SweepDir
    url: str
    study_name: str
    threads: int | None


def worker_main(job: WorkerJob, index: int) -> None:
    """Entry point of a local worker process."""
    exit_with_parent()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one-line errors say what failed
    try:
        with storage_errors(job.url):
            storage = make_storage(job.url, job.sweep.spec.heartbeat)
            study = open_study(job.sweep, storage, job.study_name, worker=index)
            work(study, TrialRunner(job.sweep, job.sweep_dir, job.threads))
    except ReslabError as err:
        print(f"reslab sweep: error: worker {index}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_processes(job: WorkerJob, slots: list[dict[str, str]], study: optuna.Study) -> list[str]:
    """Run a worker per slot (execute/slots.py: its GPU or its share of the cores) as spawned
    processes (fork would copy torch's thread pools and locks).

    A worker that dies by a signal costs one trial, not the sweep: its trial is settled
    (`settle_lost_worker`) and a fresh worker takes its place while trials are queued.
    Returns warning lines for the caller to print after the outputs."""
    ctx = multiprocessing.get_context("spawn")
    start = lambda i: spawn(ctx, worker_main, (job, i), slots[i], f"reslab-sweep-worker-{i}")  # noqa: E731
    procs = {i: start(i) for i in range(len(slots))}
    warnings_, errors = [], []
    try:
        while procs:
            multiprocessing.connection.wait([p.sentinel for p in procs.values()])
            for i, p in list(procs.items()):
                if p.exitcode is None:
                    continue
                del procs[i]
                if p.exitcode < 0:
                    line = settle_lost_worker(study, worker_id(p.pid), -p.exitcode,
                                              job.sweep.spec.heartbeat.max_retry)
                    warnings_.append(f"worker {i}: {line}")
                    if line.startswith("trial") and has_waiting(study):
                        procs[i] = start(i)
                elif p.exitcode:
                    errors.append(f"worker {i}: exit code {p.exitcode}")
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the workers too; give them a moment to record it.
        for p in procs.values():
            p.join(timeout=10)
        raise
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
    if errors:
        raise ReslabError("; ".join(errors) + " (see the messages above)")
    return warnings_


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


# Signals a process receives from its own faults (native crashes), as opposed to being killed.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def settle_lost_worker(study: optuna.Study, worker: str, signum: int, max_retry: int) -> str:
    """Fail the trial a dead worker was running. A crash (SIGSEGV, SIGABRT, ...) is the trial's
    own outcome: FAIL with reason "crashed: signal N", never retried (it would crash again).
    A kill (SIGKILL, SIGTERM, e.g. the OOM killer or a user) re-queues the trial, up to
    max_retry times per point. Returns one line saying what happened."""
    name = _signal_name(signum)
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get("worker") == worker]
    if not running:
        return f"died by signal {signum} ({name}) outside any trial"
    trial, storage = running[0], study_storage(study)
    crashed = signum in CRASH_SIGNALS
    key, text = (("reason", f"crashed: signal {signum} ({name})") if crashed
                 else ("lost", f"worker killed by signal {signum} ({name})"))
    try:
        storage.set_trial_user_attr(trial_id(trial), key, text)
        storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return f"trial {trial.number}: already settled by the heartbeat"
    if crashed:
        return f"trial {trial.number} {text}; recorded as FAIL, the sweep goes on"
    retry = requeue(study, storage.get_trial(trial_id(trial)), max_retry)
    return (f"trial {trial.number}: {text}; " + (f"retried as trial {retry}" if retry is not None
                                                 else f"not retried (max_retry {max_retry})"))


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int) -> int | None:
    """Queue the failed trial's point again, with the retry bookkeeping Optuna's heartbeat
    callback keeps (so trials.csv says "retried as trial N" either way)."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return None
    attrs = {**trial.system_attrs, "failed_trial": trial.number, "retry_history": history}
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                        distributions=trial.distributions, system_attrs=attrs))
    return study.get_trials(deepcopy=False)[-1].number


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
