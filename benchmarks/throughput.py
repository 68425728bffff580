"""Images per second of the fast recipe and each candidate change, per CPU setting: the
machine-dependent half of a budget prediction (epoch_curves.py measures the other half).

Each candidate trains through reslab itself (its augmentation, EMA, lookahead, validations:
everything a run pays per epoch) on a class-balanced subset of the JPEG folder with the
recipe's 10 % held out, so an epoch's validation costs the same share of it as on the full
data. A measurement is one reslab run of 1 + --measure-epochs epochs: the first epoch (kernel
creation, compilation under `compile`) is left out, and images/s = training images per
measured epoch / its seconds (training + that epoch's validation, if one is due). Rounds
interleave the candidates (the starting one rotates), so a shared machine's drift hits each
alike; the median round counts. The final evaluation (TTA) and the run's start-up are not in
it: budget_prediction.py takes them as a separate overhead.

`--isa both` (the default) measures the native kernels and then the AVX2 setting
(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), each in its own process, and appends one
JSON line per candidate and setting to --out.

    python benchmarks/throughput.py                                  # quiet machine only
    python benchmarks/throughput.py --candidates baseline,width24 --isa native --rounds 5
    python benchmarks/throughput.py --per-class 20 --rounds 1 --measure-epochs 1 \\
        --candidates baseline,ls0.2 --out /tmp/t.jsonl              # smoke test: no meaning
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from epoch_curves import CURVE_CANDIDATES, append_row, environment, recipe_here, split_sizes
from time_to_accuracy import CANDIDATES, RECIPE, ROOT, isa_env

import reslab
from reslab.config import Config
from reslab.engine.machine import machine_class

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "throughput.jsonl"


def all_candidates() -> dict[str, Callable[[Config], list[str]]]:
    """Every candidate of the curves and of the wall-clock ablation (compile and evalonce
    change images/s only), name -> overrides(base)."""
    out = {name: c.overrides for name, c in CURVE_CANDIDATES.items()}
    out.update({name: c.overrides for name, c in CANDIDATES.items() if name not in out})
    return out


def parse_names(text: str | None) -> list[str]:
    known = all_candidates()
    if not text or text == "all":
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--candidates: unknown {', '.join(unknown)} (known: "
                         f"{', '.join(known)}, or all)")
    return list(dict.fromkeys(names))


def shared_overrides(args: argparse.Namespace) -> list[str]:
    out = [f"data.root={args.root}", "train.time_budget=null",
           f"train.epochs={1 + args.measure_epochs}", f"data.max_per_class={args.per_class}",
           "train.report=false", "train.tensorboard=false", "train.progress=false",
           "train.seed=0"]
    if args.threads:
        out.append(f"train.threads={args.threads}")
    return out


def measure(args: argparse.Namespace, name: str, work: Path, n_train: int) -> float:
    """One run of the candidate -> images/s over its epochs after the first."""
    sets = shared_overrides(args)
    extra = all_candidates()[name](recipe_here(sets))
    seconds: list[float] = []
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    reslab.train(RECIPE, out=run, overrides=sets + extra, quiet=True,
                 on_epoch=lambda row: seconds.append(row["seconds"]))
    shutil.rmtree(run, ignore_errors=True)
    measured = seconds[1:]
    return n_train * len(measured) / sum(measured)


def measure_all(args: argparse.Namespace, names: list[str]) -> dict[str, list[float]]:
    """Interleaved rounds; round r starts at candidate r (mod n)."""
    n_train = split_sizes(argparse.Namespace(root=args.root, per_class=args.per_class))["n_train"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                rates[name].append(measure(args, name, Path(tmp), n_train))
            print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names)
                  + " img/s", file=sys.stderr, flush=True)
    return rates


def rows(args: argparse.Namespace, rates: dict[str, list[float]]) -> list[dict]:
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    env = environment()
    return [{"candidate": name, "isa": args.isa, "img_s": statistics.median(r), "rounds": r,
             "per_class": args.per_class, "measure_epochs": args.measure_epochs,
             "threads": args.threads or torch.get_num_threads(),
             "overrides": all_candidates()[name](recipe_here(shared_overrides(args))),
             **env, "date": date} for name, r in rates.items()]


def child_argv(args: argparse.Namespace, isa: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--isa", isa, "--root",
            str(args.root), "--out", str(args.out), "--rounds", str(args.rounds),
            "--per-class", str(args.per_class), "--measure-epochs", str(args.measure_epochs)]
    for flag, value in (("--candidates", args.candidates), ("--threads", args.threads)):
        if value:
            argv += [flag, str(value)]
    return argv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", help="comma list or all: " + ", ".join(all_candidates()))
    ap.add_argument("--isa", choices=["native", "avx2", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=500,
                    help="images per class of the subset trained on (4,500 train / 500 held "
                         "out at 500)")
    ap.add_argument("--measure-epochs", type=int, default=2, help="epochs timed after the first")
    ap.add_argument("--threads", type=int, help="train.threads (default: reslab's choice)")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, default=OUT, help="JSON lines, appended")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = parse_names(args.candidates)
    if args.isa == "both" or (args.isa == "avx2"
                              and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2"):
        isas = ("native", "avx2") if args.isa == "both" else ("avx2",)
        return max(subprocess.call(child_argv(args, isa), env=isa_env(isa)) for isa in isas)
    if args.isa == "avx2" and machine_class(torch.device("cpu")) != "cpu-fp32":
        raise SystemExit("--isa avx2: oneDNN still reports native bf16 "
                         "(ONEDNN_MAX_CPU_ISA=AVX2 did not take effect)")
    if not args.root.is_dir():
        raise SystemExit(f"no CIFAR-10 JPEG folder at {args.root}; pass --root DIR")
    for row in rows(args, measure_all(args, names)):
        append_row(args.out, row)
        print(f"{args.isa} {row['machine_class']}: {row['candidate']} {row['img_s']:.0f} img/s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
