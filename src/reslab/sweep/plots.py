"""Sweep plots (matplotlib, no display needed): objective vs each parameter, optimisation
history, parameter importance and every trial's learning curve overlaid."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .outputs import fmt_value
from .spec import Sweep


def _figure(width: float = 6.0, height: float = 4.0, left: float = 0.8):
    # Figure (not pyplot): no GUI backend, no global state shared between threads. Fixed
    # margins: an automatic layout costs more than drawing the plot.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - 0.25 / width, bottom=0.55 / height,
                        top=1 - 0.4 / height)  # margins in inches
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def write_plots(sweep_dir: Path, study: optuna.Study, sweep: Sweep) -> list[Path]:
    plots = sweep_dir / "plots"
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None]
    out = [plot_param(plots, key, done, sweep) for key in sweep.keys if done]
    if done:
        out.append(plot_history(plots / "history.png", done, sweep))
    out.append(plot_importance(plots / "importance.png", study))
    out.append(plot_trial_curves(plots / "trial_learning_curves.png", sweep_dir / "trials"))
    return [p for p in out if p is not None]


def plot_param(plots: Path, key: str, done: list[FrozenTrial], sweep: Sweep) -> Path:
    factor, metric = sweep.spec.space[key], sweep.spec.objective.metric
    fig, ax = _figure()
    pairs = [(t.params[key], t.value) for t in done if key in t.params]
    numeric = all(isinstance(p, (int, float)) and not isinstance(p, bool) for p, _ in pairs)
    if numeric:
        ax.scatter([p for p, _ in pairs], [v for _, v in pairs], alpha=0.7)
        if factor.log or (factor.values and _spans_decades([p for p, _ in pairs])):
            ax.set_xscale("log")
    else:  # categorical labels at evenly spaced positions
        labels = sorted({fmt_value(p) for p, _ in pairs})
        ax.scatter([labels.index(fmt_value(p)) for p, _ in pairs], [v for _, v in pairs],
                   alpha=0.7)
        ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=key, ylabel=metric, title=f"{metric} vs {key}")
    ax.grid(alpha=0.3)
    return _save(fig, plots / f"param_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png")


def _spans_decades(xs: list[float]) -> bool:
    positive = [x for x in xs if x > 0]
    return len(positive) == len(xs) and len(xs) > 1 and max(xs) / min(xs) >= 100


def plot_history(path: Path, done: list[FrozenTrial], sweep: Sweep) -> Path:
    obj = sweep.spec.objective
    better = max if obj.resolved_direction == "maximize" else min
    numbers = [t.number for t in done]
    values = [t.value for t in done]
    running = [better(values[: i + 1]) for i in range(len(values))]
    fig, ax = _figure()
    ax.scatter(numbers, values, label="trial", alpha=0.7)
    ax.step(numbers, running, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=obj.metric, title="Optimisation history")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_importance(path: Path, study: optuna.Study) -> Path | None:
    """fANOVA importance; skipped (None) with < 2 complete trials or no varying parameter."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = {k for k in {k for t in done for k in t.params}
               if len({json.dumps(t.params.get(k)) for t in done}) > 1}
    if len(done) < 2 or not varying:
        path.unlink(missing_ok=True)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importance = optuna.importance.get_param_importances(study, params=sorted(varying))
    except (RuntimeError, ValueError):  # e.g. too few distinct parameter sets for the model
        path.unlink(missing_ok=True)
        return None
    names = list(importance)[::-1]
    fig, ax = _figure(6.0, 1.5 + 0.4 * len(names), left=1.8)
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance (fANOVA)", title="Parameter importance")
    return _save(fig, path)


def plot_trial_curves(path: Path, trials_dir: Path) -> Path | None:
    runs = sorted((d for d in trials_dir.glob("*") if (d / "metrics.jsonl").is_file()),
                  key=lambda d: int(d.name) if d.name.isdigit() else 0)
    if not runs:
        return None
    fig, ax = _figure(7.0, 4.5)
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
        rows = [r for r in rows if r.get("val_acc") is not None]
        if rows:
            ax.plot([r["epoch"] for r in rows], [r["val_acc"] for r in rows], alpha=0.6,
                    marker="." if len(rows) < 30 else None, label=f"trial {run.name}")
    ax.set(xlabel="epoch", ylabel="val_acc", title="Learning curves of all trials")
    if len(runs) <= 12:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)
