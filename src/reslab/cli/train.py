"""reslab train CONFIG [--set K=V ...] [--out DIR] [--repeats N | --folds K] | --resume DIR"""
from __future__ import annotations

import argparse
import sys

from ..errors import ReslabError
from ._parsers import add_executor_flags, command_parser, exec_options

DIVERGED_EXIT = 3  # a run that diverged is a result, not bad input (2) nor a crash (1)

DESCRIPTION = """\
Train a model from a YAML config into a run directory. Every key can be overridden with
--set section.key=value.

Several runs of one config (the data split fixed by data.split_seed):
  --repeats N   seeds train.seed .. train.seed+N-1 into DIR/seed-K/ (or train.seed: [0, 1, 2])
  --folds K     k-fold: folds 0..K-1 into DIR/fold-i/ (or data.folds: K without data.fold)
DIR then holds repeats.yaml, summary.json and summary.csv (mean, std, 95 % t-interval, n and
the values per metric of result.json and per robustness row) and report.html. Re-running the
command (or --resume DIR) reuses the finished runs and resumes an interrupted one; two copies
of it on one DIR share the runs (--workers/--gpus/--executor: where they train)."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "train", "train a model from a config into a run directory",
                       DESCRIPTION)
    p.add_argument("config", nargs="?", metavar="CONFIG", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=0.01 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/NAME-TIME)")
    p.add_argument("--resume", metavar="DIR", help="continue the run (or the repeats) in DIR")
    p.add_argument("--repeats", type=int, metavar="N",
                   help="train N runs with seeds train.seed .. train.seed+N-1 (same data split)")
    p.add_argument("--folds", type=int, metavar="K",
                   help="k-fold: train one run per fold 0..K-1 (data.folds=K, data.fold=i)")
    p.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    add_executor_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..api import train

    if not args.config and not args.resume:
        raise ReslabError("expected a CONFIG file or --resume RUN_DIR")
    if args.config and args.resume:
        raise ReslabError("give either CONFIG or --resume RUN_DIR, not both")
    result = train(args.config, out=args.out, resume=args.resume, overrides=args.overrides,
                   quiet=args.quiet, repeats=args.repeats, folds=args.folds,
                   options=exec_options(args))
    if result.get("stop_reason") == "diverged":  # one run (a fan-out returns its summary)
        print(f"reslab train: diverged: {result.get('stop_detail', '')} (stop_reason: diverged "
              "in result.json)", file=sys.stderr)
        return DIVERGED_EXIT
    return 0
