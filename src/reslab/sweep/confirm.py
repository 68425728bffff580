"""Confirm a sweep's winner: retrain the top trials with fresh seeds and pick by the mean.

The best of many single runs is partly the luckiest (the winner's curse): its value is biased
upwards, and the ranking of close trials is noise. With `confirm: {top_k, repeats}` the top_k
COMPLETE trials (by their single-run value; a reused "same_as" result is its original trial)
are retrained `repeats` times in `confirm/trial-N/seed-K/` (training/repeats.py) and best.yaml
is the trial with the best confirmed mean. confirm.csv shows each one's single-run value next
to its confirmed mean and 95 % t-interval.

Seeds: trial's train.seed + 1000, + 1001, ... (`CONFIRM_SEED_OFFSET`): never the seed the
trial itself ran with, so its lucky draw is not counted again, and the same seeds for every
confirmed trial (they share a base seed), so their confirmations pair up seed by seed.

Each trial's confirmation trains in its own spawned process, like trials (workers.py): a
native crash costs that confirmation ("crashed: signal 11"), not the sweep. Re-running the
sweep command reuses finished confirmation runs and resumes interrupted ones.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import sys
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import Config, validate
from ..errors import ReslabError
from ..runs.rundir import RepeatsDir, SweepDir
from ..stats import summarize
from ..training.repeats import finished_runs, plan, run_repeats
from .outputs import fmt_value
from .spec import Sweep
from .trial import objective_value
from .workers import exit_with_parent

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


def confirm(study: optuna.Study, sweep: Sweep, sweep_dir: SweepDir, workers: int,
            threads: int | None) -> list[Confirmation]:
    """Train what the top trials' confirmations still need (in up to `workers` processes at
    once) and read their values."""
    found = [confirmation_of(t, sweep, sweep_dir, threads) for t in top_trials(study, sweep)]
    todo = [c for c in found if not _finished(c)]
    if todo:
        print(f"Confirming {len(found)} top trial(s) with {sweep.spec.confirm.repeats} fresh "
              f"seeds each ({len(todo)} to train)", flush=True)
    for c, reason in zip(todo, run_isolated(todo, workers)):
        c.reason = reason
    for c in found:
        c.values = confirmed_values(c, sweep)
    return found


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


# ----------------------------------------------------------------------------- processes
def run_isolated(todo: list[Confirmation], workers: int) -> list[str]:
    """Each confirmation in a spawned process, `workers` at a time -> a reason per
    confirmation ('' when its process ended cleanly)."""
    ctx = multiprocessing.get_context("spawn")
    reasons = [""] * len(todo)
    running: dict[int, multiprocessing.Process] = {}
    queue = list(range(len(todo)))
    try:
        while queue or running:
            while queue and len(running) < workers:
                i = queue.pop(0)
                running[i] = ctx.Process(target=confirm_main, name=f"reslab-confirm-{i}",
                                         args=(todo[i].cfg.to_dict(), str(todo[i].target.path)))
                running[i].start()
            multiprocessing.connection.wait([p.sentinel for p in running.values()])
            for i, proc in [(i, p) for i, p in running.items() if p.exitcode is not None]:
                del running[i]
                reasons[i] = _exit_reason(todo[i], proc.exitcode)
    finally:
        for proc in running.values():
            proc.terminate()
    return reasons


def _exit_reason(c: Confirmation, code: int) -> str:
    if code == 0:
        return ""
    what = f"crashed: signal {-code}" if code < 0 else f"failed: exit code {code}"
    print(f"reslab sweep: warning: confirmation of trial {c.trial.number} {what}; the sweep "
          "goes on (re-running the command retries it)", file=sys.stderr)
    return what


def confirm_main(cfg: dict, out: str) -> None:
    """Entry point of a confirmation process."""
    exit_with_parent()
    try:
        run_repeats(cfg, out=Path(out), quiet=True)
    except ReslabError as err:
        print(f"reslab sweep: error: confirmation in {out}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


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
