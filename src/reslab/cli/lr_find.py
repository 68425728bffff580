"""reslab lr-find CONFIG [--set K=V ...] [--out DIR] [--steps N] [--start-lr LR] [--end-lr LR]"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ReslabError
from ..output import info, warn


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("lr-find", help="LR range test: suggest a learning rate for a config",
                       description="Train a throwaway copy of the configured model while the "
                       "learning rate grows exponentially; stop when the loss diverges; write "
                       "lr_find.json (suggested_lr = LR at the smoothed loss minimum / 10, "
                       "steepest_lr, the curve) and lr_find.png.")
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.batch_size=256 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output directory (new or empty; default: "
                   "runs/NAME-lr-find-TIME)")
    p.add_argument("--steps", type=int, default=200,
                   help="steps of the ramp (default 200; the data is cycled if it has fewer "
                   "batches)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first LR (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last LR (default 10)")
    p.add_argument("--quiet", action="store_true", help="print only the suggestion line")
    return p


def run(args: argparse.Namespace) -> int:
    # Imported here, like every command's heavy modules: `reslab --help` stays fast.
    from ..config import load_config
    from ..report.plots import plot_lr_find
    from ..runs.rundir import LrFindDir
    from ..training.lr_find import lr_find, range_warning

    cfg = load_config(args.config, args.overrides)
    out = LrFindDir.create(cfg.name or Path(args.config).stem, args.out)  # before training
    log = (lambda line: None) if args.quiet else info
    cfg, finding = lr_find(cfg, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr,
                           log=log)
    result = finding.to_json(cfg)
    out.write_finding(result)
    plot_lr_find(result, out.plot_png)
    if finding.suggested_lr is None:
        raise ReslabError(f"no suggestion: the loss diverged within {len(finding.lrs)} steps; "
                          f"lower --start-lr (now {args.start_lr:g}); curve in {out.plot_png}")
    print(f"suggested lr {finding.suggested_lr:.3g} (minimum {finding.min_loss_lr:.3g} / 10; "
          f"steepest {_fmt(finding.steepest_lr)}), {finding.stop_reason} after "
          f"{len(finding.lrs)} steps: {out.finding}, {out.plot_png}")
    warning = range_warning(finding)
    if warning:
        warn(warning)
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
