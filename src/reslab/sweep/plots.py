"""Sweep plots: Optuna's own matplotlib plots (optimisation history, one slice per parameter,
parallel coordinates, contour, importance) in the run plots' style, and every trial's
learning curve labelled by its parameter values.

Optuna draws log axes for `log: true` ranges itself (grid values are categories, evenly
spaced). Importance needs enough complete trials to mean anything: below
MIN_TRIALS_FOR_IMPORTANCE the plot is titled "indicative".
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from matplotlib import pyplot as plt
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as vis

from ..report.plots import plot_overlaid_curves, save_figure, styled
from ..runs.rundir import SweepDir
from .outputs import fmt_value
from .spec import Sweep

MIN_TRIALS_FOR_IMPORTANCE = 8
MAX_CONTOUR_PARAMS = 3  # a contour grid of more parameters is too small to read


def write_plots(sweep_dir: SweepDir, study: optuna.Study, sweep: Sweep) -> list[Path]:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None]
    metric = sweep.spec.objective.metric
    varying = [k for k in sweep.keys if len({fmt_value(t.params.get(k)) for t in done}) > 1]
    plots: dict[str, Callable] = {"history": lambda: vis.plot_optimization_history(
        study, target_name=metric)}
    for key in sweep.keys:
        plots[f"param_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}"] = \
            lambda key=key: vis.plot_slice(study, params=[key], target_name=metric)
    if len(varying) >= 2:
        plots["parallel_coordinate"] = lambda: vis.plot_parallel_coordinate(
            study, params=varying, target_name=metric)
    if 2 <= len(varying) <= MAX_CONTOUR_PARAMS:
        plots["contour"] = lambda: vis.plot_contour(study, params=varying, target_name=metric)
    if len(done) >= 2 and varying:
        plots["importance"] = lambda: importance(study, varying, len(done), metric)
    out = [draw(sweep_dir.plot(name), make) for name, make in plots.items()] if done else []
    out.append(trial_curves(sweep_dir, study, sweep))
    return [p for p in out if p is not None]


def draw(path: Path, make: Callable) -> Path | None:
    """One Optuna plot saved to `path`; None where it has nothing to draw (too few trials)."""
    with styled(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib API experimental
        fig = None
        try:
            axes = make()
            fig = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            restyle(fig)
            return save_figure(fig, path)
        except (ValueError, RuntimeError, ZeroDivisionError):
            path.unlink(missing_ok=True)
            return None
        finally:
            if fig is not None:
                plt.close(fig)


def restyle(fig) -> None:
    """Optuna draws in matplotlib's ggplot style; make it look like the run plots."""
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        ax.set_facecolor("white")
        ax.grid(True, alpha=0.3, color="0.6", linestyle="-")
        ax.spines[["top", "right"]].set_visible(False)
        ax.title.set(fontsize=12, fontweight="bold")


def importance(study: optuna.Study, params: list[str], complete: int, metric: str):
    ax = vis.plot_param_importances(study, params=params, target_name=metric)
    title = "Parameter importance (fANOVA)"
    if complete < MIN_TRIALS_FOR_IMPORTANCE:
        title += f"\nindicative only: {complete} complete trials (< {MIN_TRIALS_FOR_IMPORTANCE})"
    for loc in ("left", "right"):  # Optuna titles this plot in another slot
        ax.set_title("", loc=loc)
    ax.set_title(title)
    return ax


def trial_curves(sweep_dir: SweepDir, study: optuna.Study, sweep: Sweep) -> Path | None:
    """Validation curves of every trial that trained, labelled by its parameter values."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    curves = {}
    for run in sweep_dir.trial_runs():
        rows = run.read_metrics()
        trial = by_number.get(int(run.path.name)) if run.path.name.isdigit() else None
        if rows and trial is not None:
            curves[trial_label(trial, sweep)] = rows
    if not curves:
        return None
    return plot_overlaid_curves(curves, sweep_dir.trial_curves_png,
                                keys=("val_acc", "val_loss"))


def trial_label(t: FrozenTrial, sweep: Sweep) -> str:
    values = ", ".join(f"{k.rsplit('.', 1)[-1]}={fmt_value(t.params.get(k))}" for k in sweep.keys)
    return f"#{t.number}: {values}"
