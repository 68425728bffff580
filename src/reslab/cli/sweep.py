"""reslab sweep SWEEP.yaml [--out DIR] [--storage URL] [--study NAME] [--set K=V] [--workers N]
[--gpus 0,1] [--runs-per-gpu K]"""
from __future__ import annotations

import argparse

from ._parsers import add_executor_flags, add_set_flag, exec_options


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep", help="run a hyperparameter sweep (grid, random, tpe, ofat) with Optuna",
        description="Run the sweep described by SWEEP.yaml: each trial trains a run directory "
        "under DIR/trials/. Re-running the same command resumes it; the same command on "
        "several machines against one --storage shares it.")
    p.add_argument("spec", metavar="SWEEP.yaml", help="sweep file (base, space, sampler, ...)")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default: sweeps/NAME)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage: sqlite:///PATH (default DIR/study.db), "
                   "postgresql+psycopg2://USER@HOST/DB, or journal:PATH")
    p.add_argument("--study", metavar="NAME", help="study name (default: the sweep's name)")
    add_set_flag(p)
    add_executor_flags(p, what="trials")
    return p


def run(args: argparse.Namespace) -> int:
    from ..sweep.run import run_sweep

    run_sweep(args.spec, out=args.out, storage=args.storage, study_name=args.study,
              options=exec_options(args), overrides=args.overrides)
    return 0
