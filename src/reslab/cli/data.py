"""reslab data CONFIG [--set K=V ...] [--out DIR]"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._parsers import command_parser

DESCRIPTION = """\
Look at a config's data before training on it: images per class and split (the splits
training uses), image sizes, file formats and bit depths, per-channel mean/std of the train
split, a grid of samples per class and a grid of the configured train augmentation, so you
see what the model sees. Reads the data through the decoded-image cache (decoding it once
if needed, as training would); never downloads.

Prints the table and writes into DIR (a new or empty directory; default
runs/NAME-data-TIME):
  data.json       the numbers
  data.md         the tables (Markdown)
  samples.png     up to 8 train images per class, one class per row
  augmented.png   a train image per class, then 5 draws of the train augmentation
  report.html     all of it in one page (also report.md; `reslab report DIR` redraws it)"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "data", "dataset overview: counts, sizes, formats, statistics, "
                       "samples and augmentation", DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set data.augment=crop (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output directory (new or empty; default: "
                   "runs/NAME-data-TIME)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data.overview import count_table, data_overview, overview_markdown, summary_lines
    from ..progress import progress_enabled
    from ..report import write_report
    from ..runs.rundir import DataDir
    from ._parsers import show_table

    cfg = load_config(args.config, args.overrides)
    name = cfg.name or Path(args.config).stem
    out = DataDir.create(name, args.out)  # before the data is read: a bad --out fails fast
    overview = data_overview(cfg, progress=progress_enabled(cfg.train.progress))
    preview = overview.summary["preview"]
    images = {preview["samples_caption"]: out.samples.name,
              preview["augmented_caption"]: out.augmented.name}
    out.write_overview(overview.summary, overview_markdown(overview.summary, name, images),
                       overview.samples, overview.augmented)
    show_table(*count_table(overview.summary), title="Images per class and split")
    for line in summary_lines(overview.summary):
        print(line)
    html, _ = write_report(out.path)
    print(f"data overview: {out.overview_md}, {out.samples}, {out.augmented}, {html}")
    return 0
