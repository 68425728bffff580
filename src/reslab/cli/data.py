"""reslab data CONFIG [--set K=V ...] [--out DIR] | reslab data example DIR [--kind KIND]"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ReslabError
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
  report.html     all of it in one page (also report.md; `reslab report DIR` redraws it)

`reslab data example DIR [--kind photos|formats|cifar10-subset]` writes a small image tree
to try the commands on (DIR/<class>/<image>, 20 images per class): `photos` 64x64 RGB JPEGs,
`cifar10-subset` 32x32 PNGs laid out as the CIFAR-10 training folder, `formats` the format
study's jpeg/, linear/ and log/ trees. The images are CIFAR-10's from
../shared/data/cifar10/train when that folder exists, else the bundled digits scaled up."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "data", "dataset overview: counts, sizes, formats, statistics, "
                       "samples and augmentation", DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="YAML config file (or `example`, below)")
    p.add_argument("dir", metavar="DIR", nargs="?", help="with `example`: the folder to write")
    # data/example.py's KINDS, spelled here so that the parser does not import torch.
    p.add_argument("--kind", choices=("photos", "formats", "cifar10-subset"), default="photos",
                   help="with `example`: which tree to write (default photos)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set data.augment=crop (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output directory (new or empty; default: "
                   "runs/NAME-data-TIME)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.config == "example" and not Path(args.config).is_file():
        return write_example(args)
    if args.dir is not None:
        raise ReslabError(f"unexpected argument {args.dir!r} (DIR goes with `reslab data "
                          "example DIR`; an output folder is --out DIR)")
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


def write_example(args: argparse.Namespace) -> int:
    from ..data.example import write_example as write

    if args.dir is None:
        raise ReslabError("reslab data example DIR: the folder to write is missing")
    print(write(args.dir, args.kind))
    return 0
