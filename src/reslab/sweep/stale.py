"""RUNNING trials whose worker is gone, and what a worker waiting on others says.

A trial records its worker as `HOST:PID` (workers.run_one). When that host is this machine and
no process has that pid any more, the worker is certainly dead: the trial is failed at once and
handed to the storage's retry callback (the same re-queue the heartbeat's grace period would
end in), so a rerun after an interrupted sweep starts training in seconds instead of waiting
out the grace period. A worker on another host, or a live pid, keeps the heartbeat rule.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..output import warn
from .optuna_private import study_storage, trial_id

# While a worker only waits for other workers' trials, one line this often says what for.
WAIT_LINE_EVERY_S = 30.0


def pid_alive(pid: int) -> bool:
    """Is there a process with this pid on this machine? (One of another user counts.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_dead_worker(trial: FrozenTrial, host: str | None = None) -> str | None:
    """The trial's recorded worker when it is a process of this host that no longer exists."""
    worker = str(trial.user_attrs.get("worker") or "")
    where, _, pid = worker.rpartition(":")
    if where != (host or socket.gethostname()) or not pid.isdigit():
        return None
    return None if pid_alive(int(pid)) else worker


def fail_dead_local_workers(study: optuna.Study) -> list[str]:
    """Fail (and re-queue through the retry callback, where the storage has one) every RUNNING
    trial whose worker was a process of this host that is gone; one line per trial."""
    storage, lines = study_storage(study), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = local_dead_worker(trial)
        if worker is None:
            continue
        try:
            storage.set_trial_user_attr(trial_id(trial), "lost",
                                        f"worker {worker} is gone (no such process)")
            if not storage.set_trial_state_values(trial_id(trial), TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker settled it first
        callback = _failed_trial_callback(storage)
        if callback is not None:
            callback(study, storage.get_trial(trial_id(trial)))
        lines.append(f"trial {trial.number}: its worker {worker} is gone (no such process on "
                     "this host); re-queued now, without waiting for the heartbeat's grace period")
    for line in lines:
        warn(line)
    return lines


def _failed_trial_callback(storage):
    for name in ("get_heartbeat_stale_trial_callback", "get_failed_trial_callback"):
        get = getattr(storage, name, None)
        if callable(get):
            return get()
    return None


class WaitNotice:
    """One line every WAIT_LINE_EVERY_S while a worker has nothing to do but wait for trials
    other workers run: which trials, whose, and until when they count as alive."""

    def __init__(self, grace_s: float | None, every_s: float = WAIT_LINE_EVERY_S):
        self.grace_s, self.every_s = grace_s, every_s
        self._last: float | None = None

    def __call__(self, study: optuna.Study) -> str | None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            return None
        self._last = now
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        try:
            ages = heartbeat_ages(study_storage(study), [trial_id(t) for t in running])
        except Exception:  # the line is a courtesy: a failed query must not stop the worker
            ages = {}
        line = waiting_line(running, self.grace_s, ages)
        warn(line)
        return line

    def reset(self) -> None:
        self._last = None


def waiting_line(running: list[FrozenTrial], grace_s: float | None,
                 beat_ages: dict[int, float] | None = None) -> str:
    """'waiting for trial 3 (worker host:123, alive on this host; last heartbeat 4 s ago,
    re-queued at 10:42:13 unless it beats again) until it finishes'."""
    host = socket.gethostname()
    now = _dt.datetime.now()
    parts = []
    for t in running:
        worker = str(t.user_attrs.get("worker") or "")
        where = ("alive on this host" if worker.startswith(f"{host}:") else
                 "on another host" if worker else "worker not yet recorded")
        text = f"trial {t.number} (worker {worker or '?'}, {where}"
        age = (beat_ages or {}).get(trial_id(t))
        if grace_s and age is not None:
            deadline = now + _dt.timedelta(seconds=max(0.0, grace_s - age))
            text += (f"; last heartbeat {age:.0f} s ago, re-queued at {deadline:%H:%M:%S} "
                     "unless it beats again")
        parts.append(text + ")")
    until = "until it finishes" if len(parts) == 1 else "until they finish"
    return f"waiting for {', '.join(parts) or 'running trials'} {until}"


def heartbeat_ages(storage, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's clock (as Optuna's stale
    check measures them); {} where the storage keeps no heartbeats."""
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage) or not trial_ids:
        return {}
    import sqlalchemy
    from optuna.storages._rdb.models import TrialHeartbeatModel

    with backend.scoped_session() as session:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        beats = session.query(TrialHeartbeatModel).filter(
            TrialHeartbeatModel.trial_id.in_(trial_ids)).all()
        return {b.trial_id: (now - b.heartbeat.replace(tzinfo=None)).total_seconds()
                for b in beats}
