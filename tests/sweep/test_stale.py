"""A rerun explains itself: a trial whose worker was a process of this host that is gone is
re-queued at once (no grace wait); a live or remote worker's trial keeps the heartbeat rule,
and a worker waiting on one says what for and until when."""
from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from reslab.sweep.spec import Heartbeat
from reslab.sweep.stale import WaitNotice, waiting_line
from reslab.sweep.storage import make_storage
from reslab.sweep.study import fail_stale, pop_waiting

GRACE_S = 600  # far longer than the test: a re-queue inside it did not wait for it


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def running(tmp_path):
    """running(worker) -> (study, the trial) RUNNING, beating now, recorded as worker's."""
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}",
                           Heartbeat(interval=1, grace=GRACE_S, max_retry=3))
    study = optuna.create_study(study_name="s", storage=storage)

    def start(worker: str):
        study.enqueue_trial({"lr": 0.1})
        trial = pop_waiting(study)
        trial.suggest_categorical("lr", [0.1])
        trial.set_user_attr("worker", worker)
        return study, trial

    return start


def states(study: optuna.Study) -> list[tuple[int, TrialState, dict]]:
    return [(t.number, t.state, t.params) for t in study.get_trials(deepcopy=False)]


def test_dead_local_worker_trial_is_requeued_at_once(running, capsys):
    worker = f"{socket.gethostname()}:{dead_pid()}"
    study, trial = running(worker)
    fail_stale(study)                                  # well inside the 600 s grace period
    trials = study.get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.FAIL), (1, TrialState.WAITING)]
    assert trials[0].user_attrs["lost"] == f"worker {worker} is gone (no such process)"
    assert trials[1].system_attrs["fixed_params"] == {"lr": 0.1}   # the same point, retried
    assert trials[1].system_attrs["failed_trial"] == 0
    assert capsys.readouterr().err == (
        f"reslab: warning: trial 0: its worker {worker} is gone (no such process on this host); "
        "re-queued now, without waiting for the heartbeat's grace period\n")
    assert pop_waiting(study).number == 1


@pytest.mark.parametrize("where", ["live local pid", "another host"])
def test_live_or_remote_worker_keeps_its_trial(running, where):
    import os

    worker = f"{socket.gethostname()}:{os.getpid()}" if where == "live local pid" \
        else f"some-other-host:{dead_pid()}"
    study, _ = running(worker)
    fail_stale(study)
    assert states(study) == [(0, TrialState.RUNNING, {"lr": 0.1})]


def test_waiting_worker_says_what_for_and_until_when(running, capsys):
    study, _ = running(f"some-other-host:{4242}")
    notice = WaitNotice(grace_s=GRACE_S, every_s=30)
    line = notice(study)
    assert line.startswith("waiting for trial 0 (worker some-other-host:4242, on another host; "
                           "last heartbeat ")
    assert "re-queued at " in line and line.endswith("unless it beats again) until it finishes")
    assert notice(study) is None                       # one line per 30 s, not per poll
    assert capsys.readouterr().err == f"reslab: warning: {line}\n"


def test_waiting_line_without_heartbeat_times(running):
    import os

    worker = f"{socket.gethostname()}:{os.getpid()}"
    study, _ = running(worker)
    line = waiting_line(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), None)
    assert line == f"waiting for trial 0 (worker {worker}, alive on this host) until it finishes"
