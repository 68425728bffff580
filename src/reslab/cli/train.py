"""reslab train CONFIG [--set KEY=VALUE ...] [--out RUN_DIR] | --resume RUN_DIR"""
from __future__ import annotations

import argparse

from ..errors import ReslabError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model from a config into a run directory",
                       description="Train a model from a YAML config. Every key can be "
                       "overridden with --set section.key=value.")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=0.01 (repeatable)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/NAME-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    return p


def run(args: argparse.Namespace) -> int:
    from ..api import train

    if not args.config and not args.resume:
        raise ReslabError("expected a CONFIG file or --resume RUN_DIR")
    if args.config and args.resume:
        raise ReslabError("give either CONFIG or --resume RUN_DIR, not both")
    train(args.config, out=args.out, resume=args.resume, overrides=args.overrides,
          quiet=args.quiet)
    return 0
