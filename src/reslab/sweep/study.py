"""Optuna wiring: the study, its sampler and pruner, and the queue of trials to run.

Every trial a sweep runs is queued first (WAITING) and workers only ever pop queued trials;
they never create one. Popping is an atomic WAITING -> RUNNING update in the storage, so
however many workers (local or on other machines) share a study, each queued trial runs
once. grid/ofat queue one trial per point that no trial has claimed yet; random/tpe queue
empty "slots" up to n_trials whose parameters the sampler fills in when a worker pops them.
"""
from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import ReslabError
from .optuna_private import live_trial, study_storage, trial_id
from .spec import Sweep, point_key
from .stale import fail_dead_local_workers
from .storage import heartbeat_interval

FINGERPRINT_ATTR = "reslab_sweep"


def open_study(sweep: Sweep, storage: optuna.storages.BaseStorage, name: str,
               worker: int = 0) -> optuna.Study:
    """Create the study or join the existing one; refuse one made from a different space."""
    spec = sweep.spec
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                sampler=make_sampler(sweep, worker), pruner=make_pruner(sweep),
                                direction=spec.objective.resolved_direction)
    known = study.user_attrs.get(FINGERPRINT_ATTR)
    if known is None:
        study.set_user_attr(FINGERPRINT_ATTR, sweep.fingerprint())
    elif known != sweep.fingerprint():
        raise ReslabError(f"study {name!r} was created from a different sampler, objective or "
                          "space; give a new --study NAME or --out DIR to start a fresh one")
    return study


def make_sampler(sweep: Sweep, worker: int = 0) -> optuna.samplers.BaseSampler:
    spec = sweep.spec
    # Workers must not share a seed, or their random/TPE draws would coincide.
    seed = spec.seed + worker
    if spec.sampler == "tpe":
        startup = max(2, min(10, (spec.n_trials or 10) // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    # grid/ofat trials carry all their parameters, so their sampler is never consulted.
    return optuna.samplers.RandomSampler(seed=seed)


def max_epochs(sweep: Sweep) -> int:
    factor = sweep.spec.space.get("train.epochs")
    if factor is not None:
        return int(max(factor.values) if factor.values is not None else factor.high)
    train = sweep.base.train
    return sum(p.epochs for p in train.phases) if train.phases else train.epochs


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    kind = sweep.spec.pruner
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs(sweep),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def point_of(t: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters; a queued or just-popped trial has them only as fixed_params."""
    return {**t.system_attrs.get("fixed_params", {}), **t.params}


def claims(t: FrozenTrial) -> bool:
    """Does this trial own its point, so no other trial may train it?

    Finished (COMPLETE, PRUNED, FAIL with a recorded reason such as divergence), running or
    queued trials do. A FAIL without a reason (worker killed, interrupted, crashed) does not:
    its heartbeat retry or the next run queues the point again.
    """
    if t.user_attrs.get("duplicate_of") is not None:
        return False
    if t.state == TrialState.FAIL:
        return "reason" in t.user_attrs
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                       TrialState.WAITING)


def fail_stale(study: optuna.Study) -> None:
    """Fail RUNNING trials whose worker stopped beating, and at once those whose worker was a
    process of this host that is gone (stale.py); the retry callback re-queues them."""
    fail_dead_local_workers(study)
    if heartbeat_interval(study_storage(study)) is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fill_queue(study: optuna.Study, sweep: Sweep) -> int:
    """Queue what the sweep still needs; returns how many trials were queued."""
    fail_stale(study)
    trials = study.get_trials(deepcopy=False)
    if sweep.spec.sampler in ("grid", "ofat"):
        claimed = {point_key(point_of(t)) for t in trials if claims(t)}
        todo = [p for p in sweep.points() if point_key(p) not in claimed]
    else:
        todo = [{}] * max(0, (sweep.spec.n_trials or 0) - sum(claims(t) for t in trials))
    for params in todo:
        study.enqueue_trial(params)
    return len(todo)


def duplicate_of(study: optuna.Study, number: int, params: dict[str, Any]) -> int | None:
    """A lower-numbered trial that claims the same point (two runs queued it at once)."""
    key = point_key(params)
    for t in study.get_trials(deepcopy=False):
        if t.number < number and claims(t) and point_key(point_of(t)) == key:
            return t.number
    return None


def pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take the lowest-numbered queued trial, or None when the queue is empty.

    Unlike `study.ask()`, never creates a trial: an empty queue means the sweep is done.
    """
    storage = study_storage(study)  # the study's own (cached) storage, as Study.ask uses
    beat = heartbeat_interval(storage) is not None
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if beat:
            # Beat before taking it: a RUNNING trial without any beat is never found stale,
            # so a worker killed right after the pop would leave it RUNNING forever.
            storage.record_heartbeat(trial_id(t))
        try:
            if storage.set_trial_state_values(trial_id(t), state=TrialState.RUNNING):
                return live_trial(study, trial_id(t))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def has_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
