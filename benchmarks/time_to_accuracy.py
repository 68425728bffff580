"""Held-out CIFAR-10 accuracy reached in a fixed wall-clock budget, measured side by side in one
process on the same held-out split (reslab's seeded, stratified 10 % of the JPEG folder).

Two modes:

  (default)     the fast recipe, examples/cifar10-fast.yaml with its machine class applied,
                versus the seed recipe: ResNet-18 width 42, batch 32, SGD lr 0.001 momentum
                0.9 wd 5e-4, crop-flip-gray, torchvision ImageFolder + DataLoader(2 workers),
                trained until the budget (minus its final evaluation) is spent.
  --candidates  an ablation: the recipe as is (baseline, always run first), then each named
                candidate, a set of `--set` overrides on top of it, one after the other; one
                Markdown row each (held-out accuracy at the budget, images/s, epochs, delta vs
                the baseline of the same invocation) on stdout and in --json.

    python benchmarks/time_to_accuracy.py --budget 30m
    python benchmarks/time_to_accuracy.py --budget 10m --candidates all --json ablation.json
    python benchmarks/time_to_accuracy.py --budget 10m --candidates all --isa both \\
        --json ablation.json            # ablation-native.json, then ablation-avx2.json
    python benchmarks/time_to_accuracy.py --budget 20s --max-per-class 20 \\
        --candidates ls0.2,width12     # smoke test: seconds, not a measurement

`--isa avx2` re-executes this script with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
(the kernels an AVX2 laptop runs; the machine class becomes cpu-fp32); `--isa both` runs the
native setting and then the AVX2 one, each in its own process.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import reslab
from reslab.config import Config, load_config, parse_duration
from reslab.data import load_data
from reslab.data.sources import scan_class_tree, stratified_split
from reslab.engine.device import amp_dtype, resolve_device
from reslab.engine.machine import apply_machine, machine_class
from reslab.models import build_model
from reslab.runs.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "cifar10-fast.yaml"
ROOT = REPO.parent / "shared" / "data" / "cifar10" / "train"
ISA_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


# ------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    """A named change to the recipe: `overrides(base)` -> `--set` strings, where `base` is the
    recipe with this machine's class applied (for values derived from it, like a scaled LR)."""
    what: str
    overrides: Callable[[Config], list[str]]


def fixed(*items: str) -> Callable[[Config], list[str]]:
    return lambda base: list(items)


def batch_1024(base: Config) -> list[str]:
    # Linear LR scaling (Goyal et al.) from the recipe's own batch and LR. reslab has one LR
    # per parameter group kind (decay / no decay, head / backbone), no separate LR for the
    # BatchNorm biases as airbench's 64x: that part of the candidate is left out.
    lr = base.train.lr * 1024 / base.train.batch_size
    return ["train.batch_size=1024", f"train.lr={lr:.4g}", "train.nesterov=true"]


def airbench_like(base: Config) -> list[str]:
    """airbench94's recipe choices that reslab has, together (its network aside)."""
    return ["train.init=whiten", "train.lookahead=true", "data.flip=alternate",
            "train.label_smoothing=0.2", *batch_1024(base), "train.eval_every=0", "data.pad=2"]


CANDIDATES: dict[str, Candidate] = {
    "baseline": Candidate("the recipe as is (its machine class applied)", fixed()),
    "whiten": Candidate("whitening-initialised first conv", fixed("train.init=whiten")),
    "lookahead": Candidate("Lookahead k=5 alpha=0.5", fixed("train.lookahead=true")),
    "ema": Candidate("EMA of the weights (decay 0.999)", fixed("train.ema=true")),
    "altflip": Candidate("alternating flips", fixed("data.flip=alternate")),
    "ls0.2": Candidate("label smoothing 0.2", fixed("train.label_smoothing=0.2")),
    "nesterov-bs1024": Candidate("batch 1024, LR x batch/recipe batch, Nesterov", batch_1024),
    "progressive": Candidate("progressive resize from 24 px",
                             fixed("data.progressive_resize.start_size=24")),
    "width12": Candidate("ResNet-20 width 12", fixed("model.width=12")),
    "width24": Candidate("ResNet-20 width 24", fixed("model.width=24")),
    "compile": Candidate("torch.compile", fixed("train.compile=true")),
    "evalonce": Candidate("no per-epoch validation: the final evaluation only",
                          fixed("train.eval_every=0")),
    "airbench-like": Candidate("whiten + lookahead + altflip + ls0.2 + bs1024 + evalonce + "
                               "pad 2", airbench_like),
}


def parse_candidates(text: str | None) -> list[str]:
    """'a,b' or 'all' -> ['baseline', 'a', 'b']; unknown names are one error naming them."""
    if not text:
        return []
    names = [n for n in CANDIDATES if n != "baseline"] if text == "all" else \
        [n.strip() for n in text.split(",") if n.strip() and n.strip() != "baseline"]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--candidates: unknown {', '.join(unknown)} (known: "
                         f"{', '.join(CANDIDATES)}, or all)")
    return ["baseline", *dict.fromkeys(names)]


# ------------------------------------------------------------------------------ reslab runs
def base_overrides(args: argparse.Namespace) -> list[str]:
    """What every run of this invocation shares: data, budget, device, no HTML report."""
    out = [f"data.root={args.root}", f"train.time_budget={args.budget}", "train.report=false"]
    if args.max_per_class:
        out.append(f"data.max_per_class={args.max_per_class}")
    if args.device:
        out.append(f"train.device={args.device}")
    return out


def recipe_here(args: argparse.Namespace) -> tuple[Config, torch.device]:
    """The recipe with this machine's class applied (the baseline), and the device."""
    cfg = load_config(RECIPE, base_overrides(args))
    device = resolve_device(cfg.train.device)
    return apply_machine(cfg, device, base_overrides(args))[0], device


def run_reslab(name: str, overrides: list[str], out: Path, n_train: int, quiet: bool) -> dict:
    """Train the recipe + overrides into out/name -> one row of the table (no delta yet)."""
    start = time.perf_counter()
    result = reslab.train(RECIPE, out=out / name, overrides=overrides, quiet=quiet)
    wall = time.perf_counter() - start
    batch = RunDir(out / name).read_config().train.batch_size
    acc = result["test_acc"] if result["test_acc"] is not None else \
        result.get("val_acc_best_model")
    used = max(1e-9, result.get("time_used_s") or wall)
    # An epoch is ceil(n / batch) steps over n images (the last batch is short, or the only
    # one when the batch exceeds the data): images per step is their mean, not the batch.
    images = result.get("steps", 0) * n_train / math.ceil(n_train / batch)
    return {"candidate": name, "acc": acc, "img_s": images / used, "epochs": images / n_train,
            "stop_reason": result["stop_reason"], "wall_s": wall, "run": str(out / name)}


def ablation(args: argparse.Namespace, names: list[str], out: Path) -> dict:
    """Baseline first, then each candidate; the JSON file is rewritten after every row."""
    base, device = recipe_here(args)
    data = load_data(base.data)  # decode once (or open the cache) before any budget starts
    report = {**environment(args, device), "n_train": len(data.train),
              "n_heldout": len(data.val or []), "rows": []}
    print(header(report), flush=True)
    for i, name in enumerate(names, 1):
        extra = CANDIDATES[name].overrides(base)
        print(f"[{i}/{len(names)}] {name}: {' '.join(extra) or '(recipe as is)'}",
              file=sys.stderr, flush=True)
        row = run_reslab(name, base_overrides(args) + extra, out, len(data.train), args.quiet)
        row["overrides"] = extra
        baseline = report["rows"][0]["acc"] if report["rows"] else row["acc"]
        row["delta_pp"] = None if None in (row["acc"], baseline) else \
            100 * (row["acc"] - baseline)
        report["rows"].append(row)
        print(markdown_row(row), file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    return report


def environment(args: argparse.Namespace, device: torch.device) -> dict:
    """The facts a row depends on: the machine class, precision, kernels, threads."""
    amp = amp_dtype("auto", device)
    return {"budget": args.budget, "budget_s": parse_duration(args.budget),
            "isa": args.isa, "machine_class": machine_class(device), "device": str(device),
            "amp_auto": str(amp).replace("torch.", "") if amp else "fp32",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def header(report: dict) -> str:
    return (f"time to accuracy, budget {report['budget']}: machine class "
            f"{report['machine_class']} ({report['device']}, amp auto = {report['amp_auto']}, "
            f"CPU kernels {report['cpu_capability']}, {report['threads']} threads); "
            f"{report['n_train']} train / {report['n_heldout']} held-out images")


def markdown_row(row: dict) -> str:
    acc = "n/a" if row["acc"] is None else f"{row['acc']:.4f}"
    delta = "n/a" if row["delta_pp"] is None else \
        "baseline" if row["candidate"] == "baseline" else f"{row['delta_pp']:+.2f} pp"
    return (f"| {row['candidate']} | {' '.join(row['overrides']) or '(recipe)'} | {acc} | "
            f"{row['img_s']:.0f} | {row['epochs']:.1f} | {delta} |")


def markdown_table(report: dict) -> str:
    head = ("| candidate | overrides | held-out acc @ budget | images/s | epochs | "
            "vs baseline |\n|---|---|---|---|---|---|")
    return "\n".join([head, *(markdown_row(r) for r in report["rows"])])


# ------------------------------------------------------------------------------ seed recipe
def heldout_split(root: Path, max_per_class: int | None = None, seed: int = 0
                  ) -> tuple[list, list, list[str]]:
    """The same 90/10 split reslab makes: (train samples, val samples, classes)."""
    tree = scan_class_tree(root, max_per_class)
    classes = list(tree)
    samples = [(str(p), i) for i, c in enumerate(classes) for p in tree[c]]
    split = stratified_split(np.array([y for _, y in samples]), 0.1, 0.0, seed)
    return ([s for s, k in zip(samples, split) if k == 0],
            [s for s, k in zip(samples, split) if k == 1], classes)


def seed_loaders(root: Path, max_per_class: int | None):
    from torchvision import datasets, transforms

    train_s, val_s, classes = heldout_split(root, max_per_class)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    aug = transforms.Compose([transforms.RandomCrop(32, padding=4),
                              transforms.RandomHorizontalFlip(), transforms.RandomGrayscale(),
                              transforms.ToTensor(), transforms.Normalize(mean, std)])
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_ds, val_ds = datasets.ImageFolder(str(root), aug), datasets.ImageFolder(str(root), plain)
    train_ds.samples, val_ds.samples = train_s, val_s
    train_dl = torch.utils.data.DataLoader(train_ds, 32, shuffle=True, num_workers=2,
                                           persistent_workers=True)
    return train_dl, torch.utils.data.DataLoader(val_ds, 256, num_workers=2), len(classes)


def run_seed(root: Path, seconds: float, max_per_class: int | None) -> dict:
    train_dl, val_dl, n_classes = seed_loaders(root, max_per_class)
    torch.manual_seed(0)
    model = build_model(load_config(None, ["model.arch=resnet18", "model.width=42"]).model,
                        n_classes, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    start, seen, eval_reserve = time.perf_counter(), 0, 0.06 * seconds
    model.train()
    while time.perf_counter() - start < seconds - eval_reserve:
        for x, y in train_dl:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            if time.perf_counter() - start >= seconds - eval_reserve:
                break
    train_time = time.perf_counter() - start
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in val_dl:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return {"val_acc": correct / total, "img_s": seen / train_time,
            "epochs": seen / len(train_dl.dataset.samples), "wall_s": time.perf_counter() - start}


def fast_vs_seed(args: argparse.Namespace, out: Path) -> None:
    report = ablation(args, ["baseline"], out)
    fast = report["rows"][0]
    print(f"\nfast recipe: held-out acc {fast['acc']:.4f} (TTA as configured), "
          f"{fast['img_s']:.0f} img/s, {fast['epochs']:.1f} epochs, {fast['wall_s']:.0f} s")
    if args.skip_seed:
        return
    seed = run_seed(args.root, parse_duration(args.budget), args.max_per_class)
    print(f"seed recipe: held-out acc {seed['val_acc']:.4f}, {seed['img_s']:.0f} img/s, "
          f"{seed['epochs']:.2f} epochs, {seed['wall_s']:.0f} s")
    print(f"budget {args.budget}: fast {fast['acc']:.4f} vs seed {seed['val_acc']:.4f} "
          f"({100 * (fast['acc'] - seed['val_acc']):+.1f} pp), speed ratio "
          f"{fast['img_s'] / seed['img_s']:.1f}x")


# ------------------------------------------------------------------------------ ISA settings
def isa_child(args: argparse.Namespace, isa: str, suffix: bool) -> list[str]:
    """This command line for one ISA setting (`suffix`: --json and --out get the setting's
    name, so that --isa both keeps the two apart)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--budget", args.budget,
            "--root", str(args.root), "--isa", isa]
    for flag, value in (("--candidates", args.candidates), ("--device", args.device),
                        ("--max-per-class", args.max_per_class)):
        if value:
            argv += [flag, str(value)]
    if args.json:
        name = f"{args.json.stem}-{isa}{args.json.suffix}" if suffix else args.json.name
        argv += ["--json", str(args.json.with_name(name))]
    if args.out:
        argv += ["--out", str(args.out / isa if suffix else args.out)]
    return argv + [f for f, on in (("--skip-seed", args.skip_seed), ("--quiet", args.quiet))
                   if on]


def isa_env(isa: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISA_ENV}
    return {**env, **ISA_ENV} if isa == "avx2" else env


def check_isa(args: argparse.Namespace) -> None:
    """Under --isa avx2 this process must run without native bf16, or the row is mislabelled."""
    if args.isa == "avx2" and machine_class(torch.device("cpu")) != "cpu-fp32":
        raise SystemExit("--isa avx2: oneDNN still reports native bf16 "
                         "(ONEDNN_MAX_CPU_ISA=AVX2 did not take effect)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30m", help="per run, e.g. 10m, 30m, 20s")
    ap.add_argument("--candidates", help=f"comma list or all: {', '.join(CANDIDATES)}")
    ap.add_argument("--root", type=Path, default=ROOT, help="the CIFAR-10 JPEG class folders")
    ap.add_argument("--max-per-class", type=int, help="first K images per class (smoke tests)")
    ap.add_argument("--device", help="train.device for every run (default: the recipe's)")
    ap.add_argument("--isa", choices=["native", "avx2", "both"], default="native")
    ap.add_argument("--json", type=Path, help="write the rows and the machine facts here")
    ap.add_argument("--out", type=Path, help="keep the run directories here (default: temp)")
    ap.add_argument("--skip-seed", action="store_true", help="default mode: fast recipe only")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines from the runs")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.isa == "both":
        codes = [subprocess.call(isa_child(args, isa, True), env=isa_env(isa))
                 for isa in ("native", "avx2")]
        sys.exit(max(codes))
    if args.isa == "avx2" and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
        sys.exit(subprocess.call(isa_child(args, "avx2", False), env=isa_env("avx2")))
    check_isa(args)
    names = parse_candidates(args.candidates)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        if not names:
            return fast_vs_seed(args, out)
        report = ablation(args, names, out)
    print(markdown_table(report))


if __name__ == "__main__":
    main()
