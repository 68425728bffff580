"""Full grid vs TPE + Hyperband on the same space and trial budget: accuracy and epochs spent.

    .venv/bin/python benchmarks/sweep_efficiency.py                      # digits, 27 x 9 epochs
    .venv/bin/python benchmarks/sweep_efficiency.py --data-root ../shared/data/cifar10/train \\
        --per-class 100 --epochs 9

The grid trains all 27 points (lr x batch size x width) for E epochs each; TPE + Hyperband gets
the same 27 trials over the same values. Prints the best validation accuracy of each, the
epochs each consumed (sum of the epochs every trial trained, pruned ones included) and their
ratio. The bar: TPE + Hyperband within 0.5 pp of the grid's best at <= 1/3 of its epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

SPACE = {"train.lr": {"values": [0.01, 0.05, 0.2]},
         "train.batch_size": {"values": [32, 64, 128]},
         "model.width": {"values": [4, 8, 16]}}


def base_config(args: argparse.Namespace) -> dict:
    if args.data_root:
        data = {"source": "folder", "root": str(Path(args.data_root).resolve()),
                "val_fraction": 0.1, "max_per_class": args.per_class, "augment": "crop-flip"}
    else:
        data = {"source": "digits", "val_fraction": 0.2, "augment": "crop", "pad": 1}
    return {"data": data, "model": {"arch": "resnet20"},
            "train": {"epochs": args.epochs, "scheduler": "cosine", "seed": args.seed,
                      "tensorboard": False, "report": False, "progress": False}}


def run(name: str, spec: dict, out: Path, workers: int) -> dict:
    from reslab.sweep.run import run_sweep

    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    start = time.perf_counter()
    sweep_dir = run_sweep(path, out=out / name, workers=workers)
    seconds = time.perf_counter() - start
    return summarise(sweep_dir, seconds)


def summarise(sweep_dir: Path, seconds: float) -> dict:
    import csv

    with open(sweep_dir / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    epochs = 0
    for t in trials:  # epochs actually trained, read from each trial's own metrics
        metrics = sweep_dir / "trials" / t["number"] / "metrics.jsonl"
        if metrics.exists():
            epochs += sum(1 for line in metrics.read_text().splitlines() if line.strip())
    values = [float(t["value"]) for t in trials if t["state"] == "COMPLETE" and t["value"]]
    return {"trials": len(trials), "complete": len(values),
            "pruned": sum(t["state"] == "PRUNED" for t in trials),
            "best_val_acc": max(values) if values else None, "epochs": epochs,
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=9, help="epochs per full trial (default 9)")
    p.add_argument("--data-root", help="image-folder dataset (e.g. a CIFAR-10 train tree); "
                   "default: digits")
    p.add_argument("--per-class", type=int, default=100, help="images per class with "
                   "--data-root (default 100)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/sweep_efficiency")
    args = p.parse_args(argv)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    base = base_config(args)
    n = 1
    for f in SPACE.values():
        n *= len(f["values"])
    grid = run("grid", {"base": base, "sampler": "grid", "space": SPACE, "seed": args.seed},
               out, args.workers)
    tpe = run("tpe-hyperband", {"base": base, "sampler": "tpe", "n_trials": n,
                                "pruner": "hyperband", "space": SPACE, "seed": args.seed},
              out, args.workers)
    report(grid, tpe, args, out)
    return 0


def report(grid: dict, tpe: dict, args: argparse.Namespace, out: Path) -> None:
    gap_pp = 100 * (grid["best_val_acc"] - tpe["best_val_acc"])
    ratio = tpe["epochs"] / grid["epochs"]
    passed = gap_pp <= 0.5 and ratio <= 1 / 3
    print()
    print(f"data: {args.data_root or 'digits'}; {grid['trials']} points x {args.epochs} epochs; "
          f"{args.workers} workers")
    print(f"{'':16}{'best val acc':>14}{'epochs':>9}{'trials':>8}{'pruned':>8}{'seconds':>9}")
    for name, r in (("grid", grid), ("tpe+hyperband", tpe)):
        print(f"{name:16}{r['best_val_acc']:>14.4f}{r['epochs']:>9}{r['trials']:>8}"
              f"{r['pruned']:>8}{r['seconds']:>9}")
    print(f"gap {gap_pp:+.2f} pp (grid - tpe), epochs ratio {ratio:.3f} "
          f"(tpe / grid); bar (<= 0.5 pp at <= 1/3 of the epochs): "
          f"{'met' if passed else 'NOT met'}")
    (out / "summary.json").write_text(json.dumps(
        {"grid": grid, "tpe_hyperband": tpe, "gap_pp": gap_pp, "epochs_ratio": ratio,
         "bar_met": passed, "epochs": args.epochs, "data": args.data_root or "digits"},
        indent=2) + "\n")
    print(f"details: {out}")


if __name__ == "__main__":
    sys.exit(main())
