"""Held-out CIFAR-10 accuracy reached in a fixed wall-clock budget: reslab's fast recipe versus
the seed recipe, run one after the other on the same machine and the same held-out split.

  fast: examples/cifar10-fast.yaml through `reslab.train` with `train.time_budget`.
  seed: ResNet-18 width 42, batch 32, SGD lr 0.001 momentum 0.9 wd 5e-4, crop-flip-gray,
        torchvision ImageFolder + transforms + DataLoader(num_workers=2), trained until the
        budget (minus its final evaluation) is spent.

Both hold out the same 5,000 images (reslab's seeded, stratified 10% split).

    python benchmarks/time_to_accuracy.py --budget 30m     # --budget 10m for a quicker look
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import reslab
from reslab.config import load_config, parse_duration
from reslab.data.sources import scan_class_tree, stratified_split
from reslab.models import build_model

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO.parent / "shared" / "data" / "cifar10" / "train"


def heldout_split(root: Path, seed: int = 0) -> tuple[list, list, list[str]]:
    """The same 90/10 split reslab makes: (train samples, val samples, classes)."""
    tree = scan_class_tree(root)
    classes = list(tree)
    samples = [(str(p), i) for i, c in enumerate(classes) for p in tree[c]]
    import numpy as np

    split = stratified_split(np.array([y for _, y in samples]), 0.1, 0.0, seed)
    return ([s for s, k in zip(samples, split) if k == 0],
            [s for s, k in zip(samples, split) if k == 1], classes)


def run_fast(root: Path, budget: str, out: Path) -> dict:
    cfg = load_config(REPO / "examples" / "cifar10-fast.yaml",
                      [f"data.root={root}", f"train.time_budget={budget}", "train.report=false"])
    start = time.perf_counter()
    result = reslab.train(cfg, out=out / "fast")
    result["wall_s"] = time.perf_counter() - start
    result["img_s"] = result["steps"] * cfg.train.batch_size / max(1e-9, result["time_used_s"])
    return result


def run_seed(root: Path, seconds: float) -> dict:
    from torchvision import datasets, transforms

    train_s, val_s, classes = heldout_split(root)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    aug = transforms.Compose([transforms.RandomCrop(32, padding=4),
                              transforms.RandomHorizontalFlip(), transforms.RandomGrayscale(),
                              transforms.ToTensor(), transforms.Normalize(mean, std)])
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_ds, val_ds = datasets.ImageFolder(str(root), aug), datasets.ImageFolder(str(root), plain)
    train_ds.samples, val_ds.samples = train_s, val_s
    train_dl = torch.utils.data.DataLoader(train_ds, 32, shuffle=True, num_workers=2,
                                           persistent_workers=True)
    val_dl = torch.utils.data.DataLoader(val_ds, 256, num_workers=2)
    torch.manual_seed(0)
    model = build_model(load_config(None, ["model.arch=resnet18", "model.width=42"]).model,
                        len(classes), 3)
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
    return {"val_acc": correct / total, "img_s": seen / train_time, "epochs": seen / len(train_s),
            "wall_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--skip-seed", action="store_true")
    args = ap.parse_args()
    seconds = parse_duration(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        fast = run_fast(args.root, args.budget, Path(tmp))
    fast_acc = fast["test_acc"] if fast["test_acc"] is not None else fast["val_acc_best_model"]
    print(f"\nfast recipe: held-out acc {fast_acc:.4f} (TTA as configured), "
          f"{fast['img_s']:.0f} img/s, {fast['epochs_run']} epochs, {fast['wall_s']:.0f} s")
    if args.skip_seed:
        return
    seed = run_seed(args.root, seconds)
    print(f"seed recipe: held-out acc {seed['val_acc']:.4f}, {seed['img_s']:.0f} img/s, "
          f"{seed['epochs']:.2f} epochs, {seed['wall_s']:.0f} s")
    print(f"budget {args.budget}: fast {fast_acc:.4f} vs seed {seed['val_acc']:.4f} "
          f"(+{100 * (fast_acc - seed['val_acc']):.1f} pp), speed ratio "
          f"{fast['img_s'] / seed['img_s']:.1f}x")


if __name__ == "__main__":
    main()
