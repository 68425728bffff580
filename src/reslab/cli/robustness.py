"""reslab robustness RUN_DIR [--data-root PATH] [--suite seed|corruptions|all] [--raw]
| --cifar10c DIR [--baseline RUN]"""
from __future__ import annotations

import argparse

from ..errors import ReslabError
from ._parsers import command_parser, show_table

SUITES = ("seed", "corruptions", "all")
DESCRIPTION = """\
Evaluate a run's best checkpoint on perturbed copies of its test split (else val, or
--data-root). Writes robustness.csv, robustness.md and plots/robustness.png into RUN_DIR
(with --raw: robustness-raw.csv, robustness-raw.md, plots/robustness-raw.png, so the two
modes' results are kept side by side; rerunning a mode replaces only its own files).
The first row, clean, is the accuracy `reslab eval` reports on the same data.

Perturbations act in display space: stored images are decoded to sRGB [0,1] for the run's
format (8-bit /255; linear and log data through the sRGB curve), perturbed, and encoded back
(8-bit data rounded to the nearest level, as the original study perturbed uint8 images).
--raw instead adds the seed suite's amounts (+50; B+10/G+20/R+30) to the stored values, as the
original study did, in the units of the files the images were decoded from: 8-bit files in
levels of 255 (saturating at 0 and 255), 16-bit files in levels of 65535 (+50 = 0.00076 of full
scale; saturating at 0 and 65535), float files (EXR, float TIFF) on the stored value itself
(+50 on a log value; unclamped). Grey images are repeated to RGB, perturbed and averaged back
to one channel.

--cifar10c DIR evaluates the run on the released CIFAR-10-C arrays instead (labels.npy and
<corruption>.npy, 5 severities of n images stacked; the 15 benchmark and 4 extra corruptions,
those present): accuracy per corruption and severity, corruption error CE per corruption and
mCE over the benchmark's 15 (Hendrycks & Dietterich 2019): CE = sum of errors over severities
divided by the --baseline run's on the same arrays, or without --baseline the mean error over
severities. Writes cifar10c.csv and cifar10c.md into RUN_DIR."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "robustness", "accuracy of a trained run under image perturbations",
                       DESCRIPTION)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data-root", metavar="PATH",
                   help="a labeled class-folder tree, evaluated whole")
    # Validated by run_robustness (not `choices`) so a bad value is the usual one-line error.
    p.add_argument("--suite", default="seed", metavar="|".join(SUITES),
                   help="seed: the original study's intensity +50, colour balance "
                   "B+10/G+20/R+30, rotation 30 degrees and all three combined; corruptions: "
                   "10 CIFAR-10-C corruptions x 5 severities; all: both (default: seed)")
    p.add_argument("--raw", action="store_true",
                   help="apply the seed suite to the STORED values as the original study did, "
                   "each amount in the source files' own units: 8-bit +50 of 255 and 16-bit +50 "
                   "of 65535 (both saturating; 8-bit sRGB equals display mode), float (EXR, "
                   "float TIFF) +50 on the stored value, unclamped. Corruptions always run in "
                   "display space")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random corruptions' noise (default 0)")
    p.add_argument("--cifar10c", metavar="DIR",
                   help="evaluate on the released CIFAR-10-C arrays in DIR instead (labels.npy, "
                   "<corruption>.npy): accuracy per corruption and severity, CE and mCE")
    p.add_argument("--baseline", metavar="RUN",
                   help="with --cifar10c: normalise each corruption's errors by this run's "
                   "(the paper's mCE); without it CE is the unnormalised mean error")
    return p


def run_cifar10c_command(args: argparse.Namespace) -> int:
    from ..evaluate.cifar10c import run_cifar10c
    from ..runs.rundir import RunDir

    rows, summary = run_cifar10c(args.run_dir, args.cifar10c, args.baseline)
    show_table(["corruption", "severity", "accuracy", "error"],
               [[r["corruption"], str(r["severity"]), f"{r['accuracy']:.4f}",
                 f"{r['error']:.4f}"] for r in rows], title="CIFAR-10-C")
    how = f"relative to {args.baseline}" if args.baseline else "unnormalised"
    if summary["mce"] is not None:
        print(f"mCE {summary['mce']:.4f} ({how})")
    run = RunDir(args.run_dir)
    print(f"cifar10c: {run.cifar10c_csv}, {run.cifar10c_md.name}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..evaluate.robustness import mean_corruption_accuracy, run_robustness
    from ..report import write_report
    from ..runs.rundir import RunDir

    if args.baseline and not args.cifar10c:
        raise ReslabError("--baseline goes with --cifar10c DIR")
    if args.cifar10c:
        return run_cifar10c_command(args)
    rows = run_robustness(args.run_dir, args.data_root, args.suite, args.raw, args.seed)
    run = RunDir(args.run_dir)
    csv, md = run.robustness_files(rows[0]["mode"])
    show_table(["perturbation", "severity", "accuracy", "drop"],
               [[r["perturbation"], str(r["severity"]), f"{r['accuracy']:.4f}",
                 f"{r['drop']:.4f}"] for r in rows], title="Robustness")
    mca = mean_corruption_accuracy(rows)
    if mca is not None:
        print(f"mean corruption accuracy {mca:.4f} (drop {rows[0]['accuracy'] - mca:.4f})")
    html, _ = write_report(run.path)  # the report draws the robustness plot (plots/)
    print(f"robustness: {csv}, {md.name}; report {html}")
    return 0
