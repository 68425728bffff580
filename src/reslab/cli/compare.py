"""reslab compare COMPARE.yaml [--out DIR] [--set K=V] [executor flags]"""
from __future__ import annotations

import argparse

from ._parsers import add_executor_flags, add_set_flag, command_parser, exec_options

DESCRIPTION = """\
Train (or reuse) every run a comparison file lists, then write DIR/compare.csv, DIR/compare.md,
DIR/significance.csv, learning curves in DIR/plots/ and DIR/report.html.

COMPARE.yaml keys:
  runs:        list of train config paths (relative to the comparison file), inline configs
               {name, data, model, train}, or existing run directories (read, not retrained)
  robustness:  false (default), true (= seed), seed, corruptions or all
  overrides:   KEY=VALUE strings applied to every config trained here (e.g. train.seed=0)
  repeats:     N: each config trained with seeds train.seed .. +N-1 (DIR/runs/NAME/seed-K/);
               the table shows means with their 95 % CI
  name:        the comparison's name (default: the file's stem)

Significance: each pair of entries evaluated on the same images is tested on the final
test accuracy (val when there is no test split): with repeats a paired t-test over common
seeds (Welch's t otherwise), with one run each McNemar's test on per-image correctness;
p-values Holm-adjusted over all pairs. compare.md and the report say in one sentence which
differences are significant at 0.05 and which rankings are within noise.

Finished runs under DIR/runs/ are reused and interrupted ones resumed, so running the same
comparison again continues it. Each run keeps its own data split settings (data.split_seed and
the fractions); a warning names any that differ between runs."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "compare", "train several configs on the same data and compare them",
                       DESCRIPTION)
    p.add_argument("compare", metavar="COMPARE.yaml")
    p.add_argument("--out", metavar="DIR", help="comparison directory (default: compare/NAME)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training lines")
    add_set_flag(p)
    add_executor_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..studies.compare import cell, run_compare, shown_columns
    from ._parsers import show_table

    rows = run_compare(args.compare, args.out, quiet=args.quiet, options=exec_options(args),
                       overrides=args.overrides)
    cols = shown_columns(rows)
    show_table(cols, [[cell(r.get(c), c, r) for c in cols] for r in rows], title="Comparison")
    return 0
