"""Wall time to a CIFAR-10 accuracy target (default 94 %) on one GPU: reslab's recipe versus
airbench94, run one after the other in the same process, on the same device and the same
images. Prints each side's time to the target and their ratio (reslab / airbench94).

Data: torchvision's CIFAR-10 pickles when --cifar-root holds cifar-10-batches-py (train on
the 50,000, measure on the 10,000 test images, as airbench reports); else the shared JPEG
training folder with reslab's seeded 10 % held out (45,000 / 5,000; JPEG-compressed images,
so both sides land lower than on the pickles). Both sides get the same decoded uint8 images.

reslab: examples/cifar10-fast.yaml (its `cuda` machine class applied) with RESLAB_GPU below
and --set on top: the CUDA path of a training run (decoded cache on the GPU, augmentation
there, bf16 autocast where native, channels_last, torch.compile), validated every epoch; the
time to target is the wall time from the start of `reslab.train` to the end of the first epoch
whose held-out accuracy reaches the target (the run stops there), or the whole run when only
the final evaluation (with TTA) reaches it. Dataset decoding is done before timing.

airbench94: the `airbench` package (PyPI, 0.1.8) when installed and the device is CUDA
(`pip install -e .[bench]`), else benchmarks/airbench94.py, a compact re-implementation of
its published recipe. Timed as airbench times itself: whitening init + training + TTA
evaluation, after a warm-up run. Reference: 94.01 % in 3.83 s on an A100 (airbench's README).

    python benchmarks/gpu_time_to_accuracy.py --cifar-root data/cifar10
    python benchmarks/gpu_time_to_accuracy.py --target 0.93          # the shared JPEG folder
    python benchmarks/gpu_time_to_accuracy.py --target 0.5 --max-per-class 50 --device cpu
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import reslab
from reslab.config import load_config
from reslab.data import DataBundle, load_data
from reslab.engine.device import amp_dtype, resolve_device
from reslab.runs.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import airbench94  # noqa: E402  (benchmarks/airbench94.py, beside this script)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "cifar10-fast.yaml"
ROOT = REPO.parent / "shared" / "data" / "cifar10" / "train"
# The GPU recipe on top of the example (a starting point for the lead's measurements; once
# measured, these move into the example's `cuda` machine set): a ResNet-18 trained for
# --epochs with a GPU batch size, compiled, no time budget (the target decides the end).
RESLAB_GPU = ["model.arch=resnet18", "model.width=64", "train.batch_size=512",
              "train.lr=0.4", "train.eval_batch_size=2000", "train.compile=true",
              "train.channels_last=true", "train.amp=auto", "train.time_budget=null",
              "train.report=false", "train.progress=false"]


class TargetReached(Exception):
    """Raised from the epoch callback: the run has reached the target, stop it there."""


def data_overrides(args: argparse.Namespace) -> tuple[list[str], str]:
    """The reslab data keys for the chosen source, and a description of it."""
    pickles = args.cifar_root and (Path(args.cifar_root) / "cifar-10-batches-py").is_dir()
    if args.cifar_root and not pickles:
        print(f"note: no cifar-10-batches-py under {args.cifar_root}; using {args.root}",
              file=sys.stderr)
    out = (["data.source=cifar10", f"data.root={args.cifar_root}", "data.val_fraction=0"]
           if pickles else [f"data.root={args.root}", "data.val_fraction=0.1"])
    if args.max_per_class:
        out.append(f"data.max_per_class={args.max_per_class}")
    what = f"CIFAR-10 pickles at {args.cifar_root}" if pickles else \
        f"image folder {args.root}, 10 % held out"
    return out, what


def heldout(data: DataBundle):
    """The split both sides are measured on: the test set when there is one, else val."""
    return data.test if data.test is not None else data.val


def heldout_acc(row: dict) -> float | None:
    return row.get("test_acc") if row.get("test_acc") is not None else row.get("val_acc")


def reslab_overrides(args: argparse.Namespace, data: list[str]) -> list[str]:
    return [*data, *RESLAB_GPU, f"train.epochs={args.epochs}", f"train.device={args.device}",
            *args.set]


def run_reslab(args: argparse.Namespace, overrides: list[str], out: Path) -> dict:
    """Train until the target (or --epochs) -> the time to it, or None when not reached."""
    if args.warmup:  # CUDA context, cuDNN, the compile caches: as airbench's warm-up run
        reslab.train(RECIPE, out=out / "warmup", overrides=overrides + ["train.epochs=1"],
                     quiet=True)
    hit: dict = {}
    start = time.perf_counter()

    def on_epoch(row: dict) -> None:
        acc = heldout_acc(row)
        if acc is not None and acc >= args.target:
            hit.update(epoch=row["epoch"], acc=acc, seconds=time.perf_counter() - start)
            raise TargetReached

    result = None
    try:
        result = reslab.train(RECIPE, out=out / "reslab", overrides=overrides,
                              on_epoch=on_epoch, quiet=args.quiet)
    except TargetReached:
        pass
    wall = time.perf_counter() - start
    rows = RunDir(out / "reslab").read_metrics()
    final = result and (result["test_acc"] if result["test_acc"] is not None
                        else result.get("val_acc_best_model"))
    if not hit and final is not None and final >= args.target:  # with the final TTA
        hit.update(epoch=rows[-1]["epoch"] if rows else None, acc=final, seconds=wall)
    return {"reached": bool(hit), **hit, "wall_s": wall, "epochs_run": len(rows),
            "first_epoch_s": rows[0]["seconds"] if rows else None, "final_acc": final,
            "best_epoch_acc": max((a for a in map(heldout_acc, rows) if a is not None),
                                  default=None)}


def save_airbench_split(folder: Path, name: str, images: torch.Tensor, labels: torch.Tensor,
                        classes: list[str]) -> None:
    """airbench's CifarLoader format: uint8 NHWC images, int64 labels, class names."""
    torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels,
                "classes": classes}, folder / name)


def run_airbench_package(data: DataBundle, warmup: bool) -> dict:
    import airbench  # optional (pyproject extra `bench`); it sets cudnn.benchmark = True

    held = heldout(data)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifar10"  # train94() opens ./cifar10/test.pt itself
        folder.mkdir()
        save_airbench_split(folder, "train.pt", data.train.images, data.train.labels,
                            data.classes)
        save_airbench_split(folder, "test.pt", held.images, held.labels, data.classes)
        os.chdir(tmp)
        try:
            loader = airbench.CifarLoader("cifar10", train=True, batch_size=1024,
                                          aug={"flip": True, "translate": 2}, altflip=True)
            test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
            if warmup:
                airbench.warmup94(loader)
            torch.cuda.synchronize()
            start = time.perf_counter()
            acc = airbench.evaluate(airbench.train94(loader, verbose=False), test, tta_level=2)
            torch.cuda.synchronize()
        finally:
            os.chdir(cwd)
    return {"impl": f"airbench package {importlib.metadata.version('airbench')}",
            "acc": acc, "seconds": time.perf_counter() - start, "epochs": 9.9, "batch": 1024}


def run_airbench(args: argparse.Namespace, data: DataBundle, device: torch.device) -> dict:
    """airbench94 on the same images: the package where it can run, else the port."""
    use_package = args.airbench == "package" or (
        args.airbench == "auto" and device.type == "cuda" and has_airbench_package())
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # as airbench's scripts set it
    try:
        if use_package:
            out = run_airbench_package(data, args.warmup)
        else:
            held = heldout(data)
            out = {"impl": "builtin port (benchmarks/airbench94.py)",
                   **airbench94.run(data.train.images, data.train.labels, held.images,
                                    held.labels, device, args.airbench_epochs, args.warmup)}
    finally:
        torch.backends.cudnn.benchmark = before
    return {**out, "reached": out["acc"] >= args.target}


def has_airbench_package() -> bool:
    return importlib.util.find_spec("airbench") is not None


def describe_device(device: torch.device) -> str:
    amp = amp_dtype("auto", device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"{device} ({name}), amp auto = {str(amp).replace('torch.', '') if amp else 'fp32'}"


def report_lines(args: argparse.Namespace, res: dict, air: dict) -> list[str]:
    t = f"{args.target:g}"
    lines = [f"reslab: reached {t} at epoch {res['epoch']} (acc {res['acc']:.4f}) in "
             f"{res['seconds']:.1f} s wall (epoch 1, with compile: {res['first_epoch_s']:.1f} s)"
             if res["reached"] else
             f"reslab: did not reach {t} in {res['epochs_run']} epochs (best epoch acc "
             f"{fmt(res['best_epoch_acc'])}, final {fmt(res['final_acc'])}) after "
             f"{res['wall_s']:.1f} s",
             f"airbench94 ({air['impl']}, {air['epochs']:g} epochs, batch {air['batch']}): acc "
             f"{air['acc']:.4f} with TTA in {air['seconds']:.1f} s: "
             f"{'reached' if air['reached'] else 'did not reach'} {t}"]
    ratio = res["seconds"] / air["seconds"] if res["reached"] and air["reached"] else None
    lines.append(f"ratio (reslab / airbench94 wall time to {t}): "
                 + (f"{ratio:.1f}x" if ratio else "n/a (not reached by both)"))
    return lines


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.94)
    ap.add_argument("--cifar-root", help="folder holding torchvision's cifar-10-batches-py")
    ap.add_argument("--root", type=Path, default=ROOT, help="else: the JPEG class folders")
    ap.add_argument("--max-per-class", type=int, help="first K images per class (smoke tests)")
    ap.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    ap.add_argument("--epochs", type=int, default=30, help="reslab's schedule length")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more reslab overrides, after RESLAB_GPU")
    ap.add_argument("--airbench", choices=["auto", "package", "builtin"], default="auto")
    ap.add_argument("--airbench-epochs", type=float, default=airbench94.HYP["epochs"],
                    help="the builtin port's schedule (airbench94: 9.9)")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                    help="an untimed warm-up run of each side first (default: on CUDA)")
    ap.add_argument("--json", type=Path, help="write both sides' results here")
    ap.add_argument("--out", type=Path, help="keep reslab's run directories here")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines from reslab")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    args.device = str(device)
    if args.warmup is None:
        args.warmup = device.type == "cuda"
    data_keys, what = data_overrides(args)
    overrides = reslab_overrides(args, data_keys)
    data = load_data(load_config(RECIPE, overrides).data)  # decode (or open the cache) now
    print(f"data: {what} ({len(data.train)} train / {len(heldout(data))} held-out images); "
          f"device {describe_device(device)}", flush=True)
    air = run_airbench(args, data, device)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_reslab(args, overrides, args.out or Path(tmp))
    lines = report_lines(args, res, air)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "data": what,
                                         "device": describe_device(device), "reslab": res,
                                         "reslab_overrides": overrides, "airbench94": air,
                                         "lines": lines}, indent=2))


if __name__ == "__main__":
    main()
