"""reslab eval RUN_DIR [--data-root PATH] [--split val|test] [--json]"""
from __future__ import annotations

import argparse
import json

from ._parsers import command_parser

DESCRIPTION = """\
Evaluate a run's best checkpoint (train.final_weights) on a split of its data or a labeled
folder: accuracy and loss, top-5 accuracy (more than 5 classes), per-class precision, recall
(= per-class accuracy), F1 and support, their macro averages, NLL, ECE (top-label, 15 bins)
and the most-confused class pairs. Writes confusion_matrix.csv and eval_metrics.json (all of
it, with the reliability bins) into the run directory; `reslab report` shows them."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "eval", "evaluate a trained run on a split or a labeled folder",
                       DESCRIPTION)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", choices=["val", "test"],
                   help="split of the run's own data (default: test if it has one, else val)")
    p.add_argument("--data-root", metavar="PATH",
                   help="a labeled class-folder tree, evaluated whole (instead of a split)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip/translate test-time augmentation (default: the run's train.tta)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_run
    from ..runs.rundir import RunDir
    from ._parsers import show_table

    res = evaluate_run(args.run_dir, args.data_root, args.split, tta=args.tta)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['split']}: accuracy {res['accuracy']:.4f} on {res['n']} images "
          f"(loss {res['loss']:.4f})")
    print(f"top-5 {_num(res['top5'])}, macro F1 {_num(res['macro_f1'])}, NLL "
          f"{_num(res['nll'])}, ECE {_num(res['ece'])}")
    show_table(["class", "precision", "recall", "f1", "support"],
               [[name, _num(m["precision"]), _num(m["recall"]), _num(m["f1"]),
                 str(m["support"])] for name, m in res["per_class"].items()])
    if res["confused_pairs"]:
        print("most confused (true -> predicted): " + ", ".join(
            f"{p['true']} -> {p['predicted']} ({p['count']})" for p in res["confused_pairs"]))
    run_dir = RunDir(args.run_dir)
    print(f"confusion matrix: {run_dir.confusion}; all metrics: {run_dir.eval_metrics}")
    return 0


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
