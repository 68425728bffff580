"""Data-path overhead: the same training step fed three ways, measured side by side.

  (a) synthetic tensors already in memory (the compute-only ceiling),
  (b) reslab's data path on a JPEG folder (decoded-tensor cache + batched augmentation),
  (c) torchvision ImageFolder + transforms + DataLoader(num_workers=2).

Rounds interleave the three so machine drift hits each alike; the median round counts.
Prints images/s of each and the ratios b/a and c/a (bar: b/a >= 0.95). (b) runs the preset
given by --augment (default crop-flip-gray, the same work as (c)); --mixup, --erasing and
--alternate add the batch-level switches, so the heaviest path is e.g.
`--augment crop-flip+randaugment --mixup --erasing 0.25`.

    python benchmarks/data_path.py [--root ../shared/data/cifar10/train] [--steps 20]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reslab.config import load_config
from reslab.data import load_data
from reslab.data.augment import build_train_augment
from reslab.data.loader import BatchLoader, Normalizer
from reslab.engine.device import amp_dtype, configure_threads
from reslab.models import build_model

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "train"


def train_step(model, opt, x, y, amp):
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        loss = F.cross_entropy(model(x), y)  # y: labels, or soft targets under --mixup
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def synthetic_batches(batch: int):
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    while True:
        yield x, y


def reslab_batches(cfg, batch: int):
    data = load_data(cfg.data)
    norm = Normalizer(data.mean, data.std, data.scale, torch.device("cpu"))
    augment = build_train_augment(cfg.data, len(data.classes), label_smoothing=0.1)
    loader = BatchLoader(data.train, batch, torch.device("cpu"), norm, augment, shuffle=True,
                         epochs=10)
    epoch = 0
    while True:
        for x, y, _ in loader.epoch(epoch):
            yield x, y
        epoch += 1


def torchvision_batches(root: Path, batch: int, mean, std):
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.RandomGrayscale(0.1),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), tf), batch_size=batch,
                                         shuffle=True, num_workers=2, persistent_workers=True,
                                         drop_last=True)
    while True:
        for x, y in loader:
            yield x.contiguous(memory_format=torch.channels_last), y


def timed(model, opt, batches, steps: int, amp) -> float:
    """Images per second over `steps` training steps, data fetching included."""
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(batches)
        train_step(model, opt, x, y, amp)
        seen += len(y)
    return seen / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="steps per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    ap.add_argument("--augment", default="crop-flip-gray",
                    help="data.augment for (b), e.g. crop-flip+randaugment")
    ap.add_argument("--mixup", action="store_true", help="(b): Mixup 0.8 / CutMix 1.0")
    ap.add_argument("--erasing", type=float, default=0.0, help="(b): data.erasing p")
    ap.add_argument("--alternate", action="store_true", help="(b): data.flip=alternate")
    return ap.parse_args()


def bench_config(args: argparse.Namespace):
    """The run config of (b): the folder, the model and the chosen augmentation switches."""
    if not args.root.is_dir():
        raise SystemExit(f"no CIFAR-10 JPEG folder at {args.root} (the shared data is absent); "
                         f"pass --root DIR with an ImageFolder tree")
    data = {"source": "folder", "root": str(args.root), "val_fraction": 0.1,
            "augment": args.augment, "erasing": args.erasing,
            "flip": "alternate" if args.alternate else "random"}
    if args.mixup:
        data["mixup"] = {"alpha": 0.8, "cutmix_alpha": 1.0}
    return load_config({"data": data, "model": {"arch": args.arch}})


def main() -> None:
    args = parse_args()
    cfg = bench_config(args)
    threads = configure_threads(None, 1)
    amp = amp_dtype(args.amp, torch.device("cpu"))
    t0 = time.perf_counter()
    data = load_data(cfg.data)  # decode once (or open the cache) before timing anything
    print(f"data: {len(data.train)} train images, cache ready in {time.perf_counter() - t0:.1f} s")
    model0 = build_model(cfg.model, 10, 3).to(memory_format=torch.channels_last)
    feeds = {"a synthetic": synthetic_batches(args.batch),
             "b reslab": reslab_batches(cfg, args.batch),
             "c torchvision": torchvision_batches(args.root, args.batch, data.mean, data.std)}
    models = {k: copy.deepcopy(model0) for k in feeds}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, foreach=True)
            for k, m in models.items()}
    for k, feed in feeds.items():  # warm-up: allocator, oneDNN kernels, DataLoader workers
        timed(models[k], opts[k], feed, 3, amp)
    rates = {k: [] for k in feeds}
    for r in range(args.rounds):
        for k, feed in feeds.items():
            rates[k].append(timed(models[k], opts[k], feed, args.steps, amp))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in rates.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{args.arch}, batch {args.batch}, {threads} threads, amp {amp or 'off'}, "
          f"{args.rounds} rounds x {args.steps} steps; (b) augment {args.augment}, "
          f"mixup {args.mixup}, erasing {args.erasing}, alternating flip {args.alternate}")
    for k, v in med.items():
        print(f"  {k:<14} {v:8.0f} img/s")
    print(f"b/a = {med['b reslab'] / med['a synthetic']:.3f}   "
          f"c/a = {med['c torchvision'] / med['a synthetic']:.3f}")


if __name__ == "__main__":
    main()
