"""Confirm a sweep's winner: retrain the top trials with fresh seeds and pick by the mean.

The best of many single runs is partly the luckiest (the winner's curse): its value is biased
upwards, and the ranking of close trials is noise. With `confirm: {top_k, repeats}` the top_k
COMPLETE trials (by their single-run value; a reused "same_as" result is its original trial)
are retrained `repeats` times in `confirm/trial-N/seed-K/` (execute/repeats.py) and best.yaml
is the trial with the best confirmed mean. confirm.csv shows each one's single-run value next
to its confirmed mean and 95 % t-interval.

Seeds: trial's train.seed + 1000, + 1001, ... (`CONFIRM_SEED_OFFSET`): never the seed the
trial itself ran with, so its lucky draw is not counted again, and the same seeds for every
confirmed trial (they share a base seed), so their confirmations pair up seed by seed.

The confirmation runs go to the run executor (reslab.execute), always in worker processes:
a native crash costs that run ("worker 0 died by signal 11"), not the sweep. Re-running the
sweep command reuses finished confirmation runs and resumes interrupted ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import Config, validate
from ..execute import ExecOptions, Outcome, RunSpec, execute
from ..execute.repeats import finished_runs, member_specs, plan
from ..output import info, warn
from ..runs.rundir import RepeatsDir, SweepDir
from ..stats import summarize
from .outputs import fmt_value
from .spec import Sweep
from .trial import objective_value

CONFIRM_SEED_OFFSET = 1000
CONFIRM_COLUMNS = ["trial", "chosen", "value", "confirmed_mean", "confirmed_std",
                   "ci95_low", "ci95_high", "n", "seeds", "values", "reason"]


@dataclass
class Confirmation:
    """One top trial's confirmation: its config over the fresh seeds and what came of it."""
    trial: FrozenTrial
    cfg: Config                    # the trial's config with train.seed = the fresh seeds
    target: RepeatsDir
    values: dict[int, float] = field(default_factory=dict)   # seed -> objective
    reason: str = ""               # why it is not (fully) confirmed

    @property
    def complete(self) -> bool:
        return not self.reason and len(self.values) == len(self.cfg.train.seed)

    @property
    def summary(self) -> dict | None:
        return summarize(self.values.values()) if self.values else None


def top_trials(study: optuna.Study, sweep: Sweep) -> list[FrozenTrial]:
    """The top_k COMPLETE trials by single-run value (reused results are not candidates)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and "same_as" not in t.user_attrs]
    maximize = sweep.spec.objective.resolved_direction == "maximize"
    done.sort(key=lambda t: (-t.value if maximize else t.value, t.number))
    return done[: sweep.spec.confirm.top_k]


def confirmation_of(trial: FrozenTrial, sweep: Sweep, sweep_dir: SweepDir,
                    threads: int | None) -> Confirmation:
    """The trial's own config (its run directory's, else rebuilt from its parameters) over
    the fresh seeds."""
    run = sweep_dir.trial(trial.number)
    cfg = run.read_config() if run.config.is_file() else sweep.config_for(trial.params)
    raw = cfg.to_dict()
    first = cfg.train.seed + CONFIRM_SEED_OFFSET
    raw["train"]["seed"] = list(range(first, first + sweep.spec.confirm.repeats))
    if threads and sweep.base.train.threads is None:
        raw["train"]["threads"] = threads
    report = sweep.spec.trial_reports
    raw["train"].update(report=report and raw["train"]["report"],
                        tensorboard=report and raw["train"]["tensorboard"])
    return Confirmation(trial, validate(raw, f"confirmation of trial {trial.number}"),
                        sweep_dir.confirmation(trial.number))


def confirm(study: optuna.Study, sweep: Sweep, sweep_dir: SweepDir,
            options: ExecOptions) -> list[Confirmation]:
    """Train what the top trials' confirmations still need (through the run executor, in
    worker processes: a native crash costs that run, not the sweep) and read their values."""
    found = [confirmation_of(t, sweep, sweep_dir, None) for t in top_trials(study, sweep)]
    todo = [c for c in found if not _finished(c)]
    if todo:
        info(f"Confirming {len(found)} top trial(s) with {sweep.spec.confirm.repeats} fresh "
             f"seeds each ({len(todo)} to train)")
        specs = [spec for c in todo for spec in confirmation_specs(c)]
        outcomes = execute(specs, replace(options, isolate=True, quiet=True), check=False)
        for c in todo:
            c.reason = failure_reason(c, outcomes)
    for c in found:
        c.values = confirmed_values(c, sweep)
    return found


def confirmation_specs(c: Confirmation) -> list[RunSpec]:
    c.target = RepeatsDir.create(c.cfg, c.target.path)
    c.target.write_plan(c.cfg)
    return member_specs(c.target, plan(c.cfg), f"trial-{c.trial.number}/")


def failure_reason(c: Confirmation, outcomes: dict[str, Outcome]) -> str:
    """'' or why the confirmation is incomplete, printed as a warning (the sweep goes on)."""
    prefix = f"trial-{c.trial.number}/"
    failed = [o for name, o in outcomes.items() if name.startswith(prefix) and not o.ok]
    if not failed:
        return ""
    warn(f"confirmation of trial {c.trial.number}: {failed[0].name} {failed[0].detail}; the "
         "sweep goes on (re-running the command retries it)")
    return failed[0].detail


def _finished(c: Confirmation) -> bool:
    if not c.target.plan_yaml.is_file():
        return False
    return len(finished_runs(c.target, plan(c.cfg))) == len(c.cfg.train.seed)


def confirmed_values(c: Confirmation, sweep: Sweep) -> dict[int, float]:
    """Seed -> the objective of each finished confirmation run (diverged runs: none)."""
    values = {}
    if not c.target.plan_yaml.is_file():
        return values
    for member, run in finished_runs(c.target, plan(c.cfg)):
        result = run.read_result()
        value = None if result.get("stop_reason") == "diverged" else \
            objective_value(sweep, result, run.read_metrics())
        if value is not None:
            values[member.key] = value
    if len(values) < len(c.cfg.train.seed) and not c.reason:
        c.reason = f"{len(c.cfg.train.seed) - len(values)} confirmation run(s) without a value"
    return values


# ----------------------------------------------------------------------------- choice
def confirmed_best(found: list[Confirmation], sweep: Sweep) -> Confirmation | None:
    """The fully confirmed trial with the best mean (ties: the better single run)."""
    complete = [c for c in found if c.complete]
    if not complete:
        return None
    sign = 1.0 if sweep.spec.objective.resolved_direction == "maximize" else -1.0
    return max(complete, key=lambda c: (sign * c.summary["mean"], sign * c.trial.value))


def confirm_rows(found: list[Confirmation], chosen: Confirmation | None,
                 sweep: Sweep) -> tuple[list[str], list[list]]:
    """confirm.csv: one row per confirmed trial, in single-run order, with its parameters."""
    rows = []
    for c in found:
        s = c.summary or {}
        rows.append([c.trial.number, "yes" if c is chosen else "", repr(float(c.trial.value)),
                     *(_num(s.get(k)) for k in ("mean", "std", "ci95_low", "ci95_high")),
                     s.get("n", 0), ";".join(str(k) for k in c.values),
                     ";".join(repr(v) for v in c.values.values()), c.reason,
                     *(fmt_value(c.trial.params.get(k)) for k in sweep.keys)])
    return CONFIRM_COLUMNS + sweep.keys, rows


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))
