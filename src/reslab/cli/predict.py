"""reslab predict RUN_DIR IMAGES --out FILE.csv"""
from __future__ import annotations

import argparse
import csv
import io

from ..utils import atomic_write_text


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="predict class names for a folder of images",
                       description="Write path,label,confidence for every image under IMAGES "
                       "(a folder, a labeled class tree, or one file).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", metavar="IMAGES")
    p.add_argument("--out", required=True, metavar="FILE.csv")
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluate import check_predictions_out, predict_paths

    check_predictions_out(args.out, args.run_dir, args.images)  # before any work
    rows = predict_paths(args.run_dir, args.images)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "label", "confidence"])
    writer.writeheader()
    writer.writerows({**r, "confidence": f"{r['confidence']:.6f}"} for r in rows)
    atomic_write_text(args.out, buf.getvalue())
    print(f"wrote {len(rows)} predictions to {args.out}")
    return 0
