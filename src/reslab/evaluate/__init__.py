"""Evaluate and predict from a run directory: rebuild the model, load best.pt, run the data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, load_config
from ..data import ImageSet, decode_listing, load_data
from ..data.loader import BatchLoader, Normalizer
from ..data.sources import Listing, scan_class_tree
from ..errors import ReslabError
from ..models import build_model
from ..train.checkpoint import load_checkpoint, load_weights
from ..train.rundir import RunDir
from ..utils import natural_key, resolve_device
from .infer import (confusion_matrix, loss_and_accuracy, per_class_accuracy, predict_batches,
                    write_confusion_csv)


@dataclass
class LoadedRun:
    run: RunDir
    cfg: Config
    classes: list[str]
    model: nn.Module
    norm: dict
    device: torch.device

    @property
    def amp(self) -> torch.dtype | None:
        from ..train.runtime import amp_dtype

        return amp_dtype(self.cfg.train.amp, self.device)

    def predict(self, batches, tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) in the precision the run trained and validated in."""
        return predict_batches(self.model, batches, tta=tta, amp_dtype=self.amp)

    def loader(self, data: ImageSet, tta_batch: int | None = None) -> BatchLoader:
        norm = Normalizer(self.norm["mean"], self.norm["std"], self.norm["scale"], self.device)
        return BatchLoader(data, tta_batch or self.cfg.train.eval_batch_size, self.device, norm,
                           channels_last=self.cfg.train.channels_last)


def load_run(path: str | Path, checkpoint: str | None = None, device: str = "auto") -> LoadedRun:
    """Rebuild a run's model from its config and load `checkpoint` (default: the weights its
    final evaluation used, `train.final_weights`)."""
    run = RunDir.existing(path)
    cfg = load_config(run.config)
    checkpoint = checkpoint or cfg.train.final_weights
    ckpt_path = run.best if checkpoint == "best" and run.best.exists() else run.last
    ckpt = load_checkpoint(ckpt_path)
    classes = ckpt.get("classes") or run.read_classes()
    in_chans = ckpt["norm"]["mean"].__len__()
    model = build_model(cfg.model.model_copy(update={"pretrained": False}),
                        cfg.model.num_classes or len(classes), in_chans)
    load_weights(model, ckpt["model"], ckpt_path)
    dev = resolve_device(device)
    return LoadedRun(run, cfg, classes, model.to(dev).eval(), ckpt["norm"], dev)


def labeled_tree(lr: LoadedRun, root: Path) -> ImageSet:
    """A class-folder tree evaluated whole; labels map by class *name* to the run's classes."""
    tree = scan_class_tree(root)
    unknown = [c for c in tree if c not in lr.classes]
    if unknown:
        raise ReslabError(f"--data-root {root}: class folder(s) {', '.join(unknown)} are not "
                          f"classes of this run ({', '.join(lr.classes)})")
    files = [p for paths in tree.values() for p in paths]
    labels = np.concatenate([np.full(len(p), lr.classes.index(c), np.int64)
                             for c, p in tree.items()])
    return decode_set(lr, Listing(lr.classes, labels, files=files, root=root))


def decode_set(lr: LoadedRun, listing: Listing) -> ImageSet:
    images, labels, _, paths = decode_listing(listing, lr.cfg.data)
    if (images.dtype == np.uint8) != (lr.norm["scale"] == 255.0):
        raise ReslabError(f"{listing.root}: images are {images.dtype} but the model was trained "
                          f"on {'8-bit' if lr.norm['scale'] == 255.0 else 'HDR'} data")
    return ImageSet(torch.from_numpy(np.array(images)), torch.from_numpy(labels),
                    paths)


def run_split(lr: LoadedRun, split: str | None) -> tuple[ImageSet, str]:
    data = load_data(lr.cfg.data)
    split = split or ("test" if data.test is not None else "val")
    chosen = getattr(data, split)
    if chosen is None:
        raise ReslabError(f"--split {split}: this run's data has no {split} split")
    return chosen, split


def evaluate_run(path: str | Path, data_root: str | Path | None = None, split: str | None = None,
                 tta: bool | None = None, write: bool = True) -> dict:
    """Accuracy, loss, per-class accuracy and confusion matrix; writes confusion_matrix.csv."""
    lr = load_run(path)
    if data_root is not None:
        data, split = labeled_tree(lr, Path(data_root)), "data-root"
    else:
        data, split = run_split(lr, split)
    tta = lr.cfg.train.tta if tta is None else tta
    logits, labels = lr.predict(lr.loader(data), tta=tta)
    loss, acc = loss_and_accuracy(logits, labels)
    matrix = confusion_matrix(labels, logits.argmax(1), len(lr.classes))
    if write:
        write_confusion_csv(lr.run.path / "confusion_matrix.csv", matrix, lr.classes)
    return {"accuracy": acc, "loss": loss, "n": len(labels), "split": split,
            "per_class": per_class_accuracy(matrix, lr.classes),
            "confusion_matrix": matrix.tolist(), "classes": lr.classes}


def image_files(path: Path) -> list[Path]:
    from ..data.sources import image_extensions

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ReslabError(f"IMAGES: {path} does not exist")
    exts = image_extensions()
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts]
    if not files:
        raise ReslabError(f"IMAGES: no images under {path} (expected {', '.join(sorted(exts))})")
    return sorted(files, key=lambda p: natural_key(str(p)))


def predict_paths(path: str | Path, images: str | Path) -> list[dict]:
    """Predict every image under `images` (a folder, a labeled tree or one file) by class name."""
    lr = load_run(path)
    files = image_files(Path(images))
    listing = Listing(lr.classes, np.zeros(len(files), np.int64), files=files, root=Path(images))
    data = decode_set(lr, listing)
    logits, _ = lr.predict(lr.loader(data), tta=lr.cfg.train.tta)
    conf, pred = logits.softmax(1).max(1)
    return [{"path": p, "label": lr.classes[i], "confidence": float(c)}
            for p, i, c in zip(data.paths, pred.tolist(), conf.tolist())]
