"""The only place reslab reaches into Optuna's private API (pinned `optuna>=4,<6`).

reslab pops queued trials itself (`study.pop_waiting`), beats their heartbeats from its own
thread and settles a dead worker's trial: Optuna does all three only inside `optimize()`, and
its public API has no way to name a trial's storage row. What is used, and why:
- `Study._storage`: the study's own (cached) storage, as `Study.ask` uses it;
- `Trial._trial_id` / `FrozenTrial._trial_id`: the storage's id of a trial (not its number);
- `optuna.Trial(study, trial_id)`: a live trial object for a row popped from the queue.
tests/sweep/test_optuna_private.py is the contract: it fails on the Optuna release where any of
these changes, before a sweep can misbehave.
"""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def live_trial(study: optuna.Study, tid: int) -> optuna.Trial:
    return optuna.Trial(study, tid)
