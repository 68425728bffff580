"""reslab: train, sweep, compare and report ResNet image classifiers from one config.

    import reslab
    run = reslab.train("examples/demo.yaml", out="runs/demo")   # a Run: run["best_val_acc"]
    run.metrics, run.config, run.predict("photos/"), run.evaluate(split="test")
    run = reslab.load_run("runs/demo")                           # a finished run, in a notebook
    summary = reslab.train("examples/demo.yaml", out="runs/demo-x3", repeats=3)  # summary.json
    reslab.evaluate("runs/demo"); reslab.sweep("sweep.yaml", out="sweeps/s")
    reslab.compare("study.yaml"); reslab.study("study.yaml", scale="tiny")
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["train", "train_repeats", "load_config", "load_run", "evaluate", "sweep", "compare",
           "study", "__version__"]


# Thin wrappers, imported on first use: `import reslab` (and so `reslab --help`) stays light,
# without torch.
def train(*args, **kwargs):
    """See `reslab.api.train` (returns a `reslab.api.Run`)."""
    from .api import train as _train

    return _train(*args, **kwargs)


def train_repeats(*args, **kwargs) -> dict:
    """See `reslab.api.train_repeats`."""
    from .api import train_repeats as _train_repeats

    return _train_repeats(*args, **kwargs)


def load_config(source=None, overrides=None):
    """A YAML path, mapping or Config plus `section.key=value` overrides -> validated Config."""
    from .config import load_config as _load

    return _load(source, overrides)


def load_run(path):
    """A run directory as a `reslab.api.Run` (config, metrics, result, predict, evaluate)."""
    from .api import load_run as _load_run

    return _load_run(path)


def _evaluate(path, data_root=None, split=None, tta=None, write=True) -> dict:
    """`reslab eval`: see `reslab.evaluate.evaluate_run`."""
    from .evaluate import evaluate_run

    return evaluate_run(path, data_root, split, tta, write)


def _sweep(spec_path, out=None, storage=None, workers=1, study_name=None):
    """`reslab sweep`: see `reslab.sweep.run.run_sweep`; returns the sweep directory."""
    from .sweep.run import run_sweep

    return run_sweep(spec_path, out, storage, workers, study_name)


def compare(study_path, out=None, quiet=False) -> list[dict]:
    """`reslab compare`: see `reslab.studies.compare.run_compare`; returns compare.csv's rows."""
    from .studies.compare import run_compare

    return run_compare(study_path, out, quiet)


def study(path, out=None, scale="full", workers=1, storage=None, only=None, quiet=False):
    """`reslab study`: see `reslab.studies.study.run_study`; returns the study directory."""
    from .studies.study import run_study

    return run_study(path, out, scale, workers, storage, only, quiet)


# `reslab.evaluate` and `reslab.sweep` are also packages: importing one replaces these names
# on `reslab`, so each package makes itself callable (utils.CallablePackage) as the same call.
evaluate, sweep = _evaluate, _sweep
evaluate.__name__, sweep.__name__ = "evaluate", "sweep"
