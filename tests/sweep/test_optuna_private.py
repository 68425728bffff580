"""The contract of sweep/optuna_private.py: the private Optuna API reslab uses still means what
it did. Fails on the Optuna release where it changes (pinned optuna>=4,<6)."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from reslab.sweep.optuna_private import live_trial, study_storage, trial_id


def test_the_private_api_reslab_uses_still_holds():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.enqueue_trial({"x": 1.0})
    storage = study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    tid = trial_id(waiting)
    assert storage.get_trial(tid).number == waiting.number
    assert storage.set_trial_state_values(tid, state=TrialState.RUNNING)
    trial = live_trial(study, tid)
    assert trial_id(trial) == tid and trial.number == waiting.number
    assert trial.suggest_float("x", 0.0, 2.0) == 1.0  # the enqueued point, through the row
    study.tell(trial, 0.5)
    assert study.best_trial.number == waiting.number and study.best_value == 0.5
