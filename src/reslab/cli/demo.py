"""reslab demo [--out RUN_DIR]: the whole study in miniature, on the bundled digits.

Trains a ResNet-20 (held-out test accuracy >= 0.95), runs the seed robustness suite, a small
grid sweep over learning rate and width, and writes the HTML reports (its measured time is in
benchmarks/README.md, "Command times").
"""
from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import yaml


def demo_config() -> dict:
    return yaml.safe_load(resources.files("reslab").joinpath("demo.yaml").read_text())


def demo_sweep(base: dict) -> dict:
    train = {**base["train"], "epochs": 6, "report": False, "tensorboard": False}
    return {"name": "digits-demo-sweep", "base": {**base, "train": train},
            "space": {"train.lr": {"values": [0.02, 0.1]}, "model.width": {"values": [8, 16]}},
            "sampler": "grid", "pruner": "none",
            "objective": {"metric": "best_val_acc", "direction": "maximize"}, "seed": 0}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the whole study in miniature on the bundled digits",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out", metavar="RUN_DIR",
                   help="run directory (default: runs/digits-demo-TIME)")
    p.add_argument("--quick", action="store_true", help="train only: skip robustness and sweep")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from ..api import train
    from ..runs.rundir import RunDir

    start = time.perf_counter()
    run_dir = Path(args.out or Path("runs") / f"digits-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    result = train(demo_config(), out=run_dir, quiet=args.quiet)
    print(f"demo: held-out test accuracy {result['test_acc']:.4f} "
          f"({time.perf_counter() - start:.0f} s)")
    if not args.quick:
        study_extras(run_dir)
    print(f"demo: run directory {run_dir}")
    print(f"demo: report {RunDir(run_dir).report_html} ({time.perf_counter() - start:.0f} s in "
          "all)")
    return 0


def study_extras(run_dir: Path) -> None:
    from ..evaluate.robustness import run_robustness
    from ..report import write_report
    from ..runs.rundir import RunDir, SweepDir
    from ..sweep import run_sweep

    run = RunDir(run_dir)
    rows = run_robustness(run_dir, suite="seed")
    print("demo: robustness " + ", ".join(f"{r['perturbation']} {r['accuracy']:.3f}"
                                          for r in rows))
    spec = run.write_demo_sweep(demo_sweep(demo_config()))
    sweep_dir = SweepDir(run_sweep(spec, out=run.demo_sweep.path))
    write_report(run_dir)
    print(f"demo: sweep report {sweep_dir.report_html}")
