"""A run as HTML in a notebook (`Run._repr_html_`): its result card and learning curves."""
from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from ..runs.rundir import RunDir
from .plots import plot_learning_curves

CARD_KEYS = ("best_val_acc", "final_val_acc", "test_acc", "top5", "macro_f1", "ece", "nll",
             "params", "epochs_run", "best_epoch", "stop_reason", "seconds_per_epoch")


def run_html(run: RunDir, result: dict, metrics: list[dict]) -> str:
    """A self-contained HTML fragment: the run's name, its result.json numbers and, when it
    logged epochs, the learning curves as an inline PNG."""
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{_shown(result[k])}</td></tr>"
        for k in CARD_KEYS if result.get(k) is not None)
    curves = f"<img alt='learning curves' src='data:image/png;base64,{_curves_png(metrics)}'>" \
        if metrics else "<p>no epochs logged</p>"
    return (f"<div><h4>reslab run {html.escape(str(run.path))}</h4>"
            f"<table>{cells}</table>{curves}</div>")


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _curves_png(metrics: list[dict]) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = plot_learning_curves(metrics, Path(folder) / "curves.png")
        return base64.b64encode(path.read_bytes()).decode("ascii")
