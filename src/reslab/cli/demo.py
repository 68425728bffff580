"""reslab demo [--out RUN_DIR]: the whole study in miniature, on the bundled digits."""
from __future__ import annotations

import argparse
import time
from importlib import resources

import yaml


def demo_config() -> dict:
    text = resources.files("reslab").joinpath("demo.yaml").read_text()
    return yaml.safe_load(text)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train a small ResNet on the bundled digits (about a minute)",
                       description="Train a ResNet-20 on scikit-learn's digits, print held-out "
                       "test accuracy and where the run directory is.")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/digits-demo-TIME)")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from ..train.loop import train

    start = time.perf_counter()
    result = train(demo_config(), out=args.out, quiet=args.quiet)
    print(f"demo: held-out test accuracy {result['test_acc']:.4f} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0
