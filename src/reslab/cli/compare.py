"""reslab compare STUDY.yaml [--out DIR]"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare", help="train several configs on the same data and compare them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train (or reuse) every run a study file lists, then write DIR/compare.csv, "
        "DIR/compare.md, overlaid learning curves in DIR/plots/ and DIR/report.html.\n\n"
        "STUDY.yaml keys: runs (list of train config paths relative to the study file, inline "
        "config mappings {name, data, model, train}, or existing run directories), "
        "robustness (false | true | seed | corruptions | all), overrides (list of "
        "KEY=VALUE applied to every config trained here, e.g. data.split_seed=0), name.\n"
        "Finished runs under DIR/runs/ are reused and interrupted ones resumed, so running "
        "the same study again continues it. Runs keep their own data.split_seed; a warning "
        "names any split setting that differs between them.")
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("--out", metavar="DIR", help="comparison directory (default: compare/NAME)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training lines")
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluate.compare import cell, columns_of, run_compare
    from .robustness import show_table

    rows = run_compare(args.study, args.out, quiet=args.quiet)
    cols = columns_of(rows)
    show_table(cols, [[cell(r.get(c), c) for c in cols] for r in rows], title="Comparison")
    return 0
