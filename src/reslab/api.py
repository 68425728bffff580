"""The Python API: what `reslab train` does, callable from code."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import training
from .config import Config, load_config
from .errors import ReslabError
from .execute import ExecOptions, write_run_report
from .execute.repeats import is_fan_out, resume_repeats, run_repeats, summary_line
from .output import info
from .runs.rundir import RepeatsDir, RunDir
from .training.tracking import log_report_artifacts, trackers


class Run(dict):
    """A run directory in Python: result.json's items (so `run["best_val_acc"]` and every
    dict use keep working), plus `.path`, `.config`, `.metrics`, `.result`, `.predict(...)`,
    `.evaluate(...)` and an HTML view in notebooks (result card and learning curves)."""

    def __init__(self, path: str | Path, result: dict | None = None):
        self.dir = RunDir.open(path)
        if result is None and self.dir.result.is_file():
            result = self.dir.read_result()
        super().__init__(result or {})

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def config(self) -> Config:
        return self.dir.read_config()

    @property
    def result(self) -> dict:
        return dict(self)

    @property
    def metrics(self):
        """metrics.jsonl: a pandas DataFrame when pandas is installed, else a list of rows."""
        rows = self.dir.read_metrics(warn=False) if self.dir.metrics.is_file() else []
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def predict(self, images: str | Path) -> list[dict]:
        """{path, label, confidence} for every image under `images` (a file or a folder)."""
        from .evaluate import predict_paths

        return predict_paths(self.path, images)

    def evaluate(self, data_root: str | Path | None = None, split: str | None = None,
                 tta: bool | None = None, write: bool = True) -> dict:
        """`reslab eval` of this run (see reslab.evaluate.evaluate_run)."""
        from .evaluate import evaluate_run

        return evaluate_run(self.path, data_root, split, tta, write)

    def _repr_html_(self) -> str:
        from .report.notebook import run_html

        rows = self.dir.read_metrics(warn=False) if self.dir.metrics.is_file() else []
        return run_html(self.dir, dict(self), rows)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {dict.__repr__(self)})"


def load_run(path: str | Path) -> Run:
    """A finished (or interrupted) run directory as a `Run`."""
    return Run(path)


def train(config=None, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, on_epoch: Callable[[dict], None] | None = None,
          quiet: bool = False, repeats: int | None = None, folds: int | None = None,
          options: ExecOptions | None = None) -> dict:
    """Train a config (YAML path, mapping or Config) into a run directory and write its report
    (`train.report`); returns the `Run` (a dict of result.json's contents with the run's
    config, metrics, predict and evaluate; shown as a card in notebooks).

    A fan-out: `repeats` N (seeds train.seed .. +N-1), `folds` K (folds 0..K-1), or a config
    that names several runs itself (a train.seed list; data.folds without data.fold), trains
    each run into OUT/seed-K/ or OUT/fold-i/ and returns summary.json's contents instead
    ({metric: {mean, std, ci95_low, ci95_high, n, values}}); `resume` of such a directory
    continues it, reusing the finished runs. `options` spread a fan-out's runs over worker
    processes, GPUs or a Ray cluster (reslab.execute).
    """
    if resume is not None and RepeatsDir(resume).plan_yaml.is_file():
        if repeats is not None or folds is not None:
            raise ReslabError("--repeats/--folds go with CONFIG; --resume continues the plan "
                               f"in {resume}/repeats.yaml as it is")
        return _fan_out(resume_repeats, resume, on_epoch=on_epoch, quiet=quiet, options=options)
    if resume is None and is_fan_out(load_config(config, overrides), repeats, folds):
        return _fan_out(run_repeats, config, out=out, repeats=repeats, folds=folds,
                        overrides=overrides, on_epoch=on_epoch, quiet=quiet, options=options)
    if repeats is not None or folds is not None:
        raise ReslabError("--repeats/--folds go with CONFIG, not with --resume of one run")
    run, result = training.run_training(config, out, resume, overrides, on_epoch, quiet)
    cfg = run.read_config()
    if int(os.environ.get("RANK", "0")) == 0 and cfg.train.report:
        write_run_report(run, quiet)
        if "mlflow" in trackers(cfg):
            log_report_artifacts(run.path)
    return Run(run.path, result) if int(os.environ.get("RANK", "0")) == 0 else result


def train_repeats(config=None, out: str | Path | None = None, repeats: int | None = None,
                  folds: int | None = None, **kwargs) -> dict:
    """`train` as a fan-out even for one seed: always a repeats directory, always the summary
    (`repeats` defaults to 1: just train.seed, or each seed of a train.seed list)."""
    return _fan_out(run_repeats, config, out=out, repeats=repeats, folds=folds, **kwargs)


def _fan_out(start: Callable, *args, quiet: bool = False, options: ExecOptions | None = None,
             **kwargs) -> dict:
    """The runs (each with its report, a hook of the executor), then the summary's report."""
    log = (lambda line: None) if quiet else info
    options = options or ExecOptions(quiet=quiet)
    target, summary = start(*args, quiet=quiet, log=log, options=options, **kwargs)
    if target.read_plan().train.report:
        write_run_report(target, quiet)
    log(summary_line(summary, target.path))
    return summary
