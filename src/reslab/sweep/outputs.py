"""What a sweep writes into its directory: the trials table, best.yaml, the factors summary
and the trials' TensorBoard HParams entries (plots: plots.py); file names live in `SweepDir`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..formatting import markdown_table
from ..runs.rundir import SweepDir
from ..training.tracking import TensorBoardLog, final_metrics
from ..utils import read_json
from .spec import Sweep

CSV_COLUMNS = ["number", "state", "value", "reason", "seconds", "device"]
MAX_ROWS_PER_FACTOR = 8


def fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def describe_reason(t: FrozenTrial, retried_by: dict[int, int]) -> str:
    """Why a trial did not simply complete."""
    if "reason" in t.user_attrs:
        return str(t.user_attrs["reason"])
    if "error" in t.user_attrs:
        return f"error: {t.user_attrs['error']}"
    if t.state == TrialState.FAIL:
        lost = t.user_attrs.get("lost", "worker lost (no heartbeat)")
        if t.number in retried_by:
            return f"{lost}; retried as trial {retried_by[t.number]}"
        return lost
    return ""


def _seconds(t: FrozenTrial) -> str:
    if t.datetime_start and t.datetime_complete:
        return f"{(t.datetime_complete - t.datetime_start).total_seconds():.3f}"
    return ""


def write_trials_csv(sweep_dir: SweepDir, trials: list[FrozenTrial], sweep: Sweep,
                     retried_by: dict[int, int]) -> None:
    rows = []
    for t in trials:
        value = "" if t.value is None or math.isnan(t.value) else repr(float(t.value))
        rows.append([t.number, t.state.name, value, describe_reason(t, retried_by),
                     _seconds(t), t.user_attrs.get("device", ""),
                     *(fmt_value(t.params.get(k)) for k in sweep.keys)])
    sweep_dir.write_trials(CSV_COLUMNS + sweep.keys, rows)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


def write_best_yaml(sweep_dir: SweepDir, best: FrozenTrial | None, sweep: Sweep,
                    confirmed: dict | None = None) -> Path | None:
    """best.yaml = the best trial's resolved config.yaml: `reslab train best.yaml` reproduces it.
    `confirmed`: the chosen trial's summary over its confirmation seeds (sweep/confirm.py)."""
    if best is None:
        return None
    trained = best.user_attrs.get("same_as", best.number)  # a reused result: its original
    source = sweep_dir.trial(trained)
    # A trial trained on another machine sharing the study has no local run directory.
    cfg = source.read_config() if source.config.is_file() else sweep.config_for(best.params)
    # Trials skip their reports (sweep.trial_reports); a retrained best run should not.
    base = sweep.base.train
    cfg.train.report, cfg.train.tensorboard = base.report, base.tensorboard
    header = (f"# best trial {trained} of this sweep ({sweep.spec.objective.metric} "
              f"{best.value:.6g}); reproduce it with: reslab train {sweep_dir.best_yaml}\n")
    if confirmed is not None:
        header = (f"# best trial {trained} of this sweep by its confirmed mean: "
                  f"{sweep.spec.objective.metric} {confirmed_text(confirmed)} (its single run: "
                  f"{best.value:.6g}); reproduce a run: reslab train {sweep_dir.best_yaml}\n")
    sweep_dir.write_best(header + cfg.to_yaml())
    return sweep_dir.best_yaml


def confirmed_text(summary: dict) -> str:
    """'0.9512 ± 0.0042 over 3 seeds' (± : half-width of the 95 % t-interval)."""
    if summary["ci95_low"] is None:
        return f"{summary['mean']:.4f} over {summary['n']} seed"
    half = (summary["ci95_high"] - summary["ci95_low"]) / 2
    return f"{summary['mean']:.4f} ± {half:.4f} over {summary['n']} seeds"


def write_factors_md(sweep_dir: SweepDir, trials: list[FrozenTrial], sweep: Sweep) -> None:
    obj = sweep.spec.objective
    # A reused result ("same_as") is not another observation of its point.
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and "same_as" not in t.user_attrs]
    lines = ["# Factors", "",
             f"Objective: `{obj.metric}` ({obj.resolved_direction}), over {len(done)} complete "
             f"trial(s). For each factor: its value, the best and mean objective of the trials "
             "with that value, and how many there were.", ""]
    for key in sweep.keys:
        best = max if obj.resolved_direction == "maximize" else min
        rows = [[label, f"{best(values):.4f}", f"{np.mean(values):.4f}", len(values)]
                for label, values in _groups(key, done, sweep)]
        lines += [f"## {key}", "", markdown_table(["value", f"best {obj.metric}", "mean",
                                                   "count"], rows, [False] * 4), ""]
    sweep_dir.write_factors("\n".join(lines))


def _groups(key: str, done: list[FrozenTrial], sweep: Sweep) -> list[tuple[str, list[float]]]:
    """(label, objective values) per value; a continuous range is binned into quantiles."""
    pairs = [(t.params[key], t.value) for t in done if key in t.params]
    distinct = sorted({p for p, _ in pairs}, key=_sort_key)
    if sweep.spec.space[key].values is not None or len(distinct) <= MAX_ROWS_PER_FACTOR:
        return [(fmt_value(v), [val for p, val in pairs if p == v]) for v in distinct]
    xs = np.array([p for p, _ in pairs], dtype=float)
    edges = np.unique(np.quantile(xs, np.linspace(0, 1, 6)))
    groups = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        vals = [val for p, val in pairs if lo <= p < hi or (last and p == hi)]
        if vals:
            groups.append((f"{lo:.4g} to {hi:.4g}", vals))
    return groups


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) \
        else (1, 0.0, str(v))


def write_trial_hparams(sweep_dir: SweepDir, trials: list[FrozenTrial], sweep: Sweep) -> None:
    """SWEEP/tb/trial-N/: one TensorBoard HParams entry per finished trial (its swept values
    and its result.json, or the objective for a trial that reused another's result), so that
    `tensorboard --logdir SWEEP/tb` shows the table and parallel coordinates. Written once per
    trial; a resumed sweep adds the new ones."""
    for t in trials:
        folder = sweep_dir.tb_trial(t.number)
        if t.state != TrialState.COMPLETE or folder.is_dir():
            continue
        result_path = sweep_dir.trial(t.number).result
        metrics = final_metrics(read_json(result_path)) if result_path.is_file() else {}
        metrics.setdefault(sweep.spec.objective.metric, float(t.value))
        params = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                  for k, v in t.params.items()}
        log = TensorBoardLog(folder)
        log.add_hparams(params, metrics)
        log.close()
