"""Hyperparameter sweeps over train configs with Optuna: grid, random, tpe and ofat (one
factor at a time), budget constraints before compute, pruning, shared storages and workers.

    from reslab.sweep import run_sweep
    run_sweep("examples/sweeps/tpe-hyperband.yaml", out="sweeps/demo", workers=2)
"""
from __future__ import annotations

import sys

from ..utils import CallablePackage
from .spec import Sweep, SweepSpec, load_sweep

__all__ = ["Sweep", "SweepSpec", "load_sweep", "run_sweep"]


def run_sweep(*args, **kwargs):
    """See `reslab.sweep.run.run_sweep` (imported lazily: it pulls in optuna and torch)."""
    from .run import run_sweep as _run

    return _run(*args, **kwargs)


# `reslab.evaluate(...)` / `reslab.sweep(...)` keep working once this package is imported (it
# replaces the top-level function of the same name): the package calls through to it.
__call_target__ = run_sweep
sys.modules[__name__].__class__ = CallablePackage
