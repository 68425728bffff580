"""reslab eval RUN_DIR [--data-root PATH] [--split val|test] [--json]"""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a trained run on a split or a labeled folder",
                       description="Evaluate a run's best checkpoint; writes "
                       "confusion_matrix.csv into the run directory.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data-root", metavar="PATH",
                   help="a labeled class-folder tree, evaluated whole")
    p.add_argument("--split", choices=["val", "test"],
                   help="split of the run's own data (default: test if it has one, else val)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip/translate test-time augmentation (default: the run's train.tta)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_run

    res = evaluate_run(args.run_dir, args.data_root, args.split, tta=args.tta)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['split']}: accuracy {res['accuracy']:.4f} on {res['n']} images "
          f"(loss {res['loss']:.4f})")
    width = max(len(c) for c in res["classes"])
    for name, acc in res["per_class"].items():
        print(f"  {name:<{width}}  {'n/a' if acc is None else f'{acc:.4f}'}")
    print(f"confusion matrix: {args.run_dir}/confusion_matrix.csv")
    return 0
