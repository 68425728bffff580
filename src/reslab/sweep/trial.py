"""One trial: parameters -> config -> constraint checks -> training -> objective value.

Returns (state, value) for the worker to `tell`; reasons go into the trial's user attrs so
trials.csv can say why a trial was pruned or failed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import Config, DataConfig
from ..errors import ReslabError
from ..execute import RunSpec, run_one
from ..models import check_param_budget
from ..output import warn
from ..runs.rundir import SweepDir
from .spec import RESULT_KEYS, Sweep, point_key
from .study import duplicate_of

Outcome = tuple[TrialState, float | None]


@dataclass
class TrialRunner:
    sweep: Sweep
    sweep_dir: SweepDir
    threads: int | None = None
    _shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __call__(self, study: optuna.Study, trial: optuna.Trial) -> Outcome:
        params = suggest(trial, self.sweep)
        done = self.already_done(study, trial, params)
        if done is not None:
            return done
        try:
            cfg = self.sweep.config_for({**params, **self._trial_settings(params)})
        except ReslabError as err:
            return _stop(trial, TrialState.FAIL, f"invalid config: {err}")
        over = self.over_budget(cfg)
        if over:
            return _stop(trial, TrialState.PRUNED, over)
        return self.train(trial, cfg)

    def already_done(self, study: optuna.Study, trial: optuna.Trial,
                     params: dict[str, Any]) -> Outcome | None:
        """An outcome without training when another trial owns or has these parameters."""
        if self.sweep.spec.sampler in ("grid", "ofat"):
            first = duplicate_of(study, trial.number, params)
            if first is None:
                return None
            trial.set_user_attr("duplicate_of", first)
            return _stop(trial, TrialState.PRUNED, f"duplicate of trial {first} (queued twice)")
        same = same_params_trial(study, trial.number, params)
        if same is None:
            return None
        # Training is seeded, so a repeat of a point (TPE often re-proposes one of a finite
        # space) would only reproduce its result: reuse it (the workaround in optuna#2021).
        trial.set_user_attr("same_as", same.number)
        trial.set_user_attr("epochs", 0)
        if same.state == TrialState.RUNNING:
            return _stop(trial, TrialState.PRUNED, f"same parameters as trial {same.number}, "
                         "which is still running: not trained twice")
        trial.set_user_attr("reason", f"same parameters as trial {same.number}: its result "
                            "reused, not trained again")
        return TrialState.COMPLETE, same.value

    def warm_up(self) -> None:
        """List the data before taking a trial (torch and the training loop are imported with
        this module), so a trial's seconds are its own work: a budget-pruned trial costs ~0 s."""
        if self.sweep.base.model.max_params is not None:
            self._data_shape(self.sweep.base.data)

    def _trial_settings(self, params: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        # Local workers share the machine's cores; an explicit train.threads wins.
        if self.threads and "train.threads" not in params and self.sweep.base.train.threads is None:
            settings["train.threads"] = self.threads
        if not self.sweep.spec.trial_reports:
            settings.update({"train.report": False, "train.tensorboard": False})
        return settings

    def over_budget(self, cfg: Config) -> str | None:
        """The model.max_params message when the model is over budget, before any data/training
        (counted on the meta device: nothing is allocated)."""
        if cfg.model.max_params is None:
            return None
        classes, chans = self._data_shape(cfg.data)
        try:
            check_param_budget(cfg.model, cfg.model.num_classes or classes, chans)
        except ReslabError as err:
            if str(err).startswith("model.max_params:"):
                return str(err)
            raise
        return None

    def _data_shape(self, data: DataConfig) -> tuple[int, int]:
        """(classes, channels) from the data listing only: no decoding."""
        key = json.dumps(data.model_dump(mode="json"), sort_keys=True)
        if key not in self._shapes:
            from ..data.sources import load_listing

            listing = load_listing(data)
            # Folder images are decoded to RGB; decoded sources carry (N, C, H, W) arrays.
            chans = listing.arrays.shape[1] if listing.arrays is not None else 3
            self._shapes[key] = (len(listing.classes), int(chans))
        return self._shapes[key]

    def train(self, trial: optuna.Trial, cfg: Config) -> Outcome:
        out = self.sweep_dir.trial(trial.number)
        if out.path.exists():
            # Left by a study that no longer exists (trial numbers restart with a new study).
            warn(f"replacing stale trial directory {out.path}")
            out.discard()
        phases = cfg.train.phases
        reporter = EpochReporter(trial, self.sweep, sum(p.epochs for p in phases) if phases
                                 else cfg.train.epochs)
        # Through the run executor's one rule: the trial's run is claimed while it trains and
        # gets its report hook (sweep.trial_reports).
        spec = RunSpec(f"trial {trial.number}", cfg.to_dict(), str(out.path))
        try:
            done = run_one(spec, quiet=True, on_epoch=reporter)
        except optuna.TrialPruned as err:
            trial.set_user_attr("epochs", reporter.epochs)
            return _stop(trial, TrialState.PRUNED, str(err))
        if done.status == "busy":
            return _stop(trial, TrialState.FAIL, done.detail)
        result = out.read_result()
        trial.set_user_attr("device", out.device_label())
        trial.set_user_attr("epochs", result["epochs_run"])
        trial.set_user_attr("seconds_per_epoch", result["seconds_per_epoch"])
        if result["stop_reason"] == "diverged":
            return _stop(trial, TrialState.FAIL, "diverged: " + result.get(
                "stop_detail", f"epoch {result['epochs_run']}"))
        value = objective_value(self.sweep, result, reporter.rows)
        if value is None:
            return _stop(trial, TrialState.FAIL, f"objective {self.sweep.spec.objective.metric} "
                         "not available (no validation/test split?)")
        return TrialState.COMPLETE, value


class EpochReporter:
    """on_epoch callback: feeds the pruner each epoch's metric; raises TrialPruned to stop."""

    def __init__(self, trial: optuna.Trial, sweep: Sweep, epochs: int):
        self.trial, self.sweep, self.last_epoch = trial, sweep, epochs
        metric = sweep.spec.objective.metric
        self.key = metric if metric not in RESULT_KEYS[:2] else "val_acc"
        self.rows: list[dict] = []

    @property
    def epochs(self) -> int:
        return self.rows[-1]["epoch"] if self.rows else 0

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        value = row.get(self.key)
        if value is None:
            return
        self.trial.report(value, row["epoch"])
        # Never prune after the last epoch: the trial has cost all it will, keep its result.
        if row["epoch"] < self.last_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned by the {self.sweep.spec.pruner} pruner after "
                                     f"epoch {row['epoch']} ({self.key} {value:.4f})")


def suggest(trial: optuna.Trial, sweep: Sweep) -> dict[str, Any]:
    params = {}
    for key, f in sweep.spec.space.items():
        if f.values is not None:
            params[key] = trial.suggest_categorical(key, sweep.choices(key))
        elif f.is_int:
            params[key] = trial.suggest_int(key, f.low, f.high, step=f.step or 1, log=f.log)
        else:
            params[key] = trial.suggest_float(key, f.low, f.high, step=f.step, log=f.log)
    return params


def same_params_trial(study: optuna.Study, number: int,
                      params: dict[str, Any]) -> FrozenTrial | None:
    """A trained COMPLETE trial, or a lower-numbered RUNNING one (so that of two trials started
    together one trains), with exactly these parameters.

    PRUNED ones do not count: under Hyperband a repeat may land in a bracket that lets it
    train longer."""
    key = point_key(params)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        earlier = t.state == TrialState.COMPLETE or t.number < number
        if earlier and "same_as" not in t.user_attrs and point_key(t.params) == key:
            return t
    return None


def objective_value(sweep: Sweep, result: dict, rows: list[dict]) -> float | None:
    """A result.json key as is; a metrics-row key: its best epoch in the objective's direction."""
    metric = sweep.spec.objective.metric
    if metric in RESULT_KEYS and result.get(metric) is not None:
        return float(result[metric])
    values = [r[metric] for r in rows if r.get(metric) is not None]
    if not values:
        return None
    return float(max(values) if sweep.spec.objective.resolved_direction == "maximize"
                 else min(values))


def _stop(trial: optuna.Trial, state: TrialState, reason: str) -> Outcome:
    trial.set_user_attr("reason", reason)
    return state, None
