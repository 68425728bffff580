"""reslab study STUDY.yaml [--out DIR] [--scale tiny|full] [--workers N] [--storage URL]"""
from __future__ import annotations

import argparse

from ._parsers import add_executor_flags, add_set_flag, command_parser, exec_options

DESCRIPTION = """\
Run a whole study: every variant (the cartesian product of the study's axes) through the
steps sweep -> best config -> confirmation seeds -> test evaluation -> robustness, then write
the paper's outputs into DIR: tables/*.csv and tables/*.tex (Table I best hyperparameters,
Table II test accuracy mean ± 95 % CI with params, epochs, seconds per epoch and hardware,
Table III robustness), per-factor curves and learning curves in plots/, significance.csv,
summary.md (which differences are significant, in plain words) and report.html/.md.

STUDY.yaml keys:
  base:        a train config (path relative to the study file, or inline)
  overrides:   {config.key: value, ...} set for every variant
  axes:        {AXIS: {VALUE: {config.key: value, ...}, ...}, ...}, or {config.key: [values]}
  prepare:     {source: DIR, per_class: K, trees: {NAME: source|srgb-png|linear-tiff|log-exr}}
               image trees made once; a config value prepared:NAME is that tree's path
  sweep:       a sweep file's body without base (space, sampler, n_trials, pruner, ...)
  confirm:     {repeats: N}: N seeds of each variant's best config (default 1)
  robustness:  {suite: seed|corruptions|all, raw: true|false}
  scale:       {tiny: {key: value, ...}, full: {...}}: overrides for --scale; keys under
               sweep., confirm., robustness., prepare. change the study, others the configs
  name:        the study's name (default: the file's stem)

Re-running the same command continues: finished steps (variants/V/steps.json) are never
redone, an interrupted sweep, seed run or conversion is resumed."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "study", "run a study: variants x (sweep, confirm, test, "
                       "robustness), with the paper's tables and figures", DESCRIPTION)
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("--out", metavar="DIR", help="study directory (default: studies/NAME-SCALE)")
    p.add_argument("--scale", choices=("tiny", "full"), default="full",
                   help="tiny: the study's quick check (scale.tiny); full (default): its "
                   "protocol")
    p.add_argument("--storage", metavar="URL", help="Optuna storage for the sweeps (default: "
                   "SQLite in each sweep's directory); one study per variant in it")
    p.add_argument("--variants", metavar="NAME,...", help="run only these variants")
    p.add_argument("--check", action="store_true",
                   help="validate the study and list its variants; train nothing")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training lines")
    add_set_flag(p)
    add_executor_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..studies.study import run_study
    from ..studies.study_spec import load_study_plan

    if args.check:
        plan = load_study_plan(args.study, args.scale, sets=args.overrides)
        for variant in plan.variants:
            print(f"{variant.name}: " + ", ".join(f"{a}={v}" for a, v in variant.values.items()))
        print(f"{plan.name}: {len(plan.variants)} variants at scale {plan.scale}; valid")
        return 0
    only = [n for n in (args.variants or "").split(",") if n]
    run_study(args.study, args.out, scale=args.scale, storage=args.storage, only=only or None,
              quiet=args.quiet, options=exec_options(args), sets=args.overrides)
    return 0
