"""`reslab report DIR`: write DIR/report.html and DIR/report.md (plots under DIR/plots/)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML + Markdown report for a run, sweep, "
        "comparison, repeats or data directory",
        description="Regenerate the plots of a run, sweep, comparison, repeats or data directory "
        "into DIR/plots/ and write DIR/report.html (self-contained: images embedded, no network "
        "access needed) and DIR/report.md.")
    parser.add_argument("dir", metavar="DIR", type=Path,
                        help="a directory reslab wrote: a run (metrics.jsonl), sweep (trials.csv), "
                        "comparison (compare.csv), repeats (repeats.yaml) or data overview")
    return parser


def run(args: argparse.Namespace) -> int:
    # Imported here so that `reslab --help` and other commands don't pay for matplotlib.
    from ..report import write_report

    html_path, _ = write_report(args.dir)
    print(f"report: {html_path}")
    return 0
