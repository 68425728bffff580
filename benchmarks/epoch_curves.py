"""Accuracy-per-epoch curves of the fast CIFAR-10 recipe and its candidate changes: held-out
accuracy at the end of a one-cycle schedule of E epochs (each E its own full schedule, as a
time budget stretches it), with no time budget and no timing at all.

Accuracy after E epochs does not depend on how fast the machine is, so these rows can be
measured at any load, at `nice -n 19`, across sittings and machines; throughput.py measures
the machine-dependent half (images/s) and budget_prediction.py combines the two into the
accuracy a budget B buys on machine M.

Each finished run appends one JSON line to --out (flushed and fsynced: a killed invocation
loses at most the run in progress). A re-run skips every (candidate, E, seed, data subset)
already in the file, so `python benchmarks/epoch_curves.py` simply continues where the last
one stopped.

    python benchmarks/epoch_curves.py                          # all candidates, E 4..24, seed 0-1
    python benchmarks/epoch_curves.py --candidates baseline,lr0.2 --epochs 4,8 --seeds 0
    python benchmarks/epoch_curves.py --per-class 100 --epochs 1,2 --out /tmp/c.jsonl  # smoke
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from time_to_accuracy import CANDIDATES, RECIPE, ROOT, heldout_split

import reslab
from reslab.config import Config, load_config
from reslab.engine.device import resolve_device
from reslab.engine.machine import apply_machine, machine_class
from reslab.runs.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "epoch_curves.jsonl"
EPOCHS = (4, 8, 12, 16, 24)
SEEDS = (0, 1)


# ------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class CurveCandidate:
    """A named change to the recipe: `overrides(base)` -> `--set` strings, where `base` is the
    recipe with this machine's class applied and `train.epochs` = E (for values derived from
    it). `only_epochs`: the E values it is measured at (None: all asked for)."""
    what: str
    overrides: Callable[[Config], list[str]]
    only_epochs: tuple[int, ...] | None = None


def fixed(*items: str) -> Callable[[Config], list[str]]:
    return lambda base: list(items)


def batch_512(base: Config) -> list[str]:
    # Linear LR scaling from the recipe's own batch and LR (0.3 x 512 / 256 = 0.6).
    return ["train.batch_size=512", f"train.lr={base.train.lr * 512 / base.train.batch_size:.4g}"]


def longer_warmup(base: Config) -> list[str]:
    # The one-cycle warm-up is 25 % of the steps by default; warmup_epochs is absolute, so
    # 40 % of this schedule is E-dependent.
    return [f"train.warmup_epochs={0.4 * base.train.epochs:.4g}"]


def shared(name: str) -> CurveCandidate:
    """A candidate of time_to_accuracy.py's ablation, the same overrides."""
    return CurveCandidate(CANDIDATES[name].what, CANDIDATES[name].overrides)


# Ordered by how much each is expected to tell (the suspects first): the informative
# order runs them in this order at each E. time_to_accuracy.py's `compile` and `evalonce` are
# not here: neither changes what an epoch computes (compilation keeps the arithmetic; the
# validations do not touch the weights, the RNG streams or the schedule), so their curve is
# the baseline's; they differ in images/s only, which throughput.py measures.
CURVE_CANDIDATES: dict[str, CurveCandidate] = {
    "baseline": shared("baseline"),
    "lr0.2": CurveCandidate("peak LR 0.2", fixed("train.lr=0.2")),
    "lr0.1": CurveCandidate("peak LR 0.1", fixed("train.lr=0.1")),
    "ls0.2": shared("ls0.2"),
    "ema": shared("ema"),
    "airbench-like": shared("airbench-like"),
    "warmup0.4": CurveCandidate("one-cycle warm-up over 40 % of the schedule (not 25 %)",
                                longer_warmup),
    "altflip": shared("altflip"),
    "lookahead": shared("lookahead"),
    "whiten": shared("whiten"),
    "bs512": CurveCandidate("batch 512, LR x 512 / recipe batch", batch_512),
    "width24": shared("width24"),
    "width12": shared("width12"),
    "progressive": shared("progressive"),
    "nesterov-bs1024": shared("nesterov-bs1024"),
    # The check that bf16 vs fp32 changes the curve little: one E is enough.
    "fp32": CurveCandidate("the recipe in fp32 (train.amp=off): the precision check",
                           fixed("train.amp=off"), only_epochs=(8,)),
}
SAME_CURVE_AS_BASELINE = ("compile", "evalonce")


def parse_names(text: str | None) -> list[str]:
    """'a,b' or 'all' (or nothing) -> names in CURVE_CANDIDATES' order; unknown: an error."""
    if not text or text == "all":
        return list(CURVE_CANDIDATES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CURVE_CANDIDATES]
    if unknown:
        note = [f"{n} has the baseline's curve (throughput only)" for n in unknown
                if n in SAME_CURVE_AS_BASELINE]
        raise SystemExit(f"--candidates: unknown {', '.join(unknown)} (known: "
                         f"{', '.join(CURVE_CANDIDATES)}, or all)" +
                         (f"; {'; '.join(note)}" if note else ""))
    return list(dict.fromkeys(names))


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < (1 if flag == "--epochs" else 0):
        raise SystemExit(f"{flag}: expected comma-separated integers >= "
                         f"{1 if flag == '--epochs' else 0}, got {text!r}")
    return list(dict.fromkeys(values))


# ------------------------------------------------------------------------------ the order
def runs_wanted(names: list[str], epochs: list[int], seeds: list[int]
                ) -> list[tuple[str, int, int]]:
    """Every (candidate, E, seed) asked for, in the grid order (E, then seed, then candidate)."""
    return [(c, e, s) for e in epochs for s in seeds for c in names
            if CURVE_CANDIDATES[c].only_epochs is None or e in CURVE_CANDIDATES[c].only_epochs]


def informative_order(wanted: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The most informative rows first, so an invocation stopped early has told the most:
    1. the baseline at E 4 and 8 (seed 0), then the baseline at E 8 with the second seed
       (the 2-seed spread that a candidate must beat);
    2. every candidate at E 8, seed 0 (CURVE_CANDIDATES' order: the suspects first);
    3. the other E, nearest the 30-minute range first (12, 4, 16, 24, then any other
       ascending), the baseline first at each, seed 0;
    4. the other seeds, in the same order."""
    e_rank = {e: i for i, e in enumerate((8, 12, 4, 16, 24))}
    c_rank = {c: i for i, c in enumerate(CURVE_CANDIDATES)}
    first = [("baseline", 4, 0), ("baseline", 8, 0), ("baseline", 8, 1)]
    lead = [r for r in first if r in wanted]
    lowest = min(s for _, _, s in wanted) if wanted else 0

    def key(row: tuple[str, int, int]) -> tuple:
        c, e, s = row
        return (s != lowest, s, e_rank.get(e, len(e_rank) + e), c_rank[c])

    return lead + sorted((r for r in wanted if r not in lead), key=key)


def ordered(wanted: list[tuple[str, int, int]], order: str) -> list[tuple[str, int, int]]:
    return informative_order(wanted) if order == "informative" else wanted


# ------------------------------------------------------------------------------ the file
def subset_name(per_class: int | None) -> str:
    return "full" if per_class is None else f"per_class={per_class}"


def row_key(row: dict) -> tuple[str, int, int, str]:
    return row["candidate"], row["epochs"], row["seed"], row["subset"]


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a killed writer) is left out."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path: Path, row: dict) -> None:
    """One line, flushed to disk before the next run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(row, sort_keys=False) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a torn last line from a killed writer: start a fresh line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode())
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------ one run
def base_overrides(args: argparse.Namespace, epochs: int, seed: int) -> list[str]:
    """What every run of this invocation shares: data, schedule length, seed, no budget."""
    out = [f"data.root={args.root}", "train.time_budget=null", f"train.epochs={epochs}",
           f"train.seed={seed}", "train.report=false", "train.tensorboard=false",
           "train.progress=false"]
    if args.per_class:
        out.append(f"data.max_per_class={args.per_class}")
    if args.threads:
        out.append(f"train.threads={args.threads}")
    if args.device:
        out.append(f"train.device={args.device}")
    return out


def recipe_here(overrides: list[str]) -> Config:
    """The recipe with this machine's class applied (what a candidate's overrides start from)."""
    cfg = load_config(RECIPE, overrides)
    return apply_machine(cfg, resolve_device(cfg.train.device), overrides)[0]


def environment() -> dict:
    """The facts a row depends on: precision class, CPU kernels, versions."""
    return {"machine_class": machine_class(torch.device("cpu")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "reslab": reslab.__version__ if hasattr(reslab, "__version__") else None}


def run_one(args: argparse.Namespace, name: str, epochs: int, seed: int, work: Path,
            sizes: dict) -> dict:
    """Train one (candidate, E, seed) and return its row (the run directory is removed)."""
    shared_sets = base_overrides(args, epochs, seed)
    extra = CURVE_CANDIDATES[name].overrides(recipe_here(shared_sets))
    run = work / f"{name}-e{epochs}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)  # a run interrupted in an earlier sitting
    result = reslab.train(RECIPE, out=run, overrides=shared_sets + extra, quiet=args.quiet)
    rundir = RunDir(run)
    cfg, metrics = rundir.read_config(), rundir.read_metrics()
    row = {"candidate": name, "epochs": epochs, "seed": seed, "subset": subset_name(args.per_class),
           # the final evaluation: held-out split, TTA and weights as the recipe has them
           "heldout_acc": result.get("test_acc") if result.get("test_acc") is not None
           else result.get("val_acc_best_model"),
           "val_acc": result.get("final_val_acc"),  # the last epoch's validation, no TTA
           "best_val_acc": result.get("best_val_acc"),
           "val_curve": [r.get("val_acc") for r in metrics],
           "epochs_run": result.get("epochs_run"), "stop_reason": result.get("stop_reason"),
           "eval_weights": result.get("eval_weights"), "tta": cfg.train.tta,
           "amp": cfg.train.amp, "threads": cfg.train.threads,
           **environment(),
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "overrides": extra, "shared_overrides": shared_sets, **sizes}
    if not args.keep_runs:
        shutil.rmtree(run, ignore_errors=True)
    return row


def split_sizes(args: argparse.Namespace) -> dict:
    """Train / held-out image counts of the recipe's split (the same split reslab makes)."""
    train, heldout, _ = heldout_split(args.root, args.per_class)
    return {"n_train": len(train), "n_heldout": len(heldout)}


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", help=f"comma list or all: {', '.join(CURVE_CANDIDATES)}")
    ap.add_argument("--epochs", default=",".join(map(str, EPOCHS)), help="E values, e.g. 4,8")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="train.seed values")
    ap.add_argument("--per-class", type=int, help="first K images per class (a subset: its "
                    "rows are keyed apart from the full data's)")
    ap.add_argument("--order", choices=["informative", "grid"], default="informative",
                    help="informative: baseline E4/E8 + the E8 seed spread, then every "
                         "candidate at E8, then the other E, then the other seeds; grid: "
                         "E, seed, candidate")
    ap.add_argument("--out", type=Path, default=OUT, help="the JSON-lines file (appended)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the CIFAR-10 JPEG class folders")
    ap.add_argument("--threads", type=int, help="train.threads for every run")
    ap.add_argument("--device", help="train.device for every run (default: the recipe's)")
    ap.add_argument("--keep-runs", type=Path, help="keep the run directories here")
    ap.add_argument("--max-runs", type=int, help="stop after this many new rows")
    ap.add_argument("--dry-run", action="store_true", help="print the rows still to run")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines from the runs")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = parse_names(args.candidates)
    wanted = ordered(runs_wanted(names, parse_ints(args.epochs, "--epochs"),
                                 parse_ints(args.seeds, "--seeds")), args.order)
    subset = subset_name(args.per_class)
    done = {row_key(r) for r in read_rows(args.out)}
    todo = [(c, e, s) for c, e, s in wanted if (c, e, s, subset) not in done]
    print(f"epoch curves: {len(wanted)} rows asked, {len(wanted) - len(todo)} already in "
          f"{args.out}, {len(todo)} to run ({subset}, order {args.order})", flush=True)
    if args.dry_run:
        for c, e, s in todo:
            print(f"  {c} E={e} seed={s}")
        return 0
    if args.max_runs is not None:
        todo = todo[:args.max_runs]
    if not args.root.is_dir():
        raise SystemExit(f"no CIFAR-10 JPEG folder at {args.root}; pass --root DIR")
    with tempfile.TemporaryDirectory(prefix="epoch-curves-") as tmp:
        work, sizes = args.keep_runs or Path(tmp), split_sizes(args)
        for i, (c, e, s) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {c} E={e} seed={s}", file=sys.stderr, flush=True)
            row = run_one(args, c, e, s, work, sizes)
            append_row(args.out, row)
            acc = "n/a" if row["heldout_acc"] is None else f"{row['heldout_acc']:.4f}"
            print(f"{c} E={e} seed={s}: held-out {acc} ({row['stop_reason']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
