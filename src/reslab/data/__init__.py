"""Data path: config -> decoded tensors split into train/val/test, plus normalisation stats."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import ReslabError
from ..output import warn
from .cache import Preprocess, decode_files
from .sources import Listing, load_listing, stratified_folds, stratified_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    images: torch.Tensor                    # (N,C,H,W) uint8, or float16 for HDR data
    labels: torch.Tensor                    # (N,) int64
    paths: list[str] | None = None
    # Sample types of the files the images were decoded from (uint8, uint16, float16,
    # float32; see cache.py): the units of `robustness --raw`. Empty when not known.
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None
    classes: list[str]
    mean: list[float]                       # per channel, in [0,1] units
    std: list[float]
    scale: float                            # 255 for uint8 caches, 1 for float16
    fmt: str                                # srgb | linear | log
    bad_files: list[str] = field(default_factory=list)
    split_record: dict | None = None        # split_record(): which image is in which split

    @property
    def in_chans(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def norm(self) -> dict:
        """What a checkpoint needs to feed the model as training did: the normalisation, the
        pixel format and the (H, W) the model was trained and evaluated at."""
        return {"mean": self.mean, "std": self.std, "scale": self.scale, "fmt": self.fmt,
                "size": list(self.train.images.shape[-2:]), "split": self.split_record}


def preprocess_of(cfg: DataConfig) -> Preprocess:
    return Preprocess(cfg.resize, cfg.center_crop, cfg.image_size, cfg.nonfinite)


def decode_listing(listing: Listing, cfg: DataConfig, progress: bool = True) -> tuple:
    """(images, labels, split, paths, sources) with folder files decoded through the cache;
    `sources`: the files' sample types (ImageSet.sources)."""
    if listing.arrays is not None:
        images = listing.arrays
        if cfg.image_size and images.shape[-1] != cfg.image_size:
            from .cache import resample

            s = cfg.image_size
            # Batched, in chunks so a float copy of the whole set is never held at once.
            images = np.concatenate([resample(images[i:i + 4096], s, s)
                                     for i in range(0, len(images), 4096)])
        return images, listing.labels, listing.split, None, (images.dtype.name,)
    images, kept, sources = decode_files(listing.files, preprocess_of(cfg), cfg.cache_dir,
                                         cfg.skip_bad, cfg.workers, progress, cfg.max_pixels)
    split = listing.split[kept] if listing.split is not None else None
    paths = [str(listing.files[i]) for i in kept]
    return images, listing.labels[kept], split, paths, tuple(sources)


def first_per_class(labels: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:k] for c in np.unique(labels)]))


def assign_splits(labels: np.ndarray, split: np.ndarray | None, cfg: DataConfig) -> np.ndarray:
    """Fill in whatever split the source left open with a seeded, stratified hold-out (or,
    with data.folds, the folds)."""
    if cfg.folds:
        return fold_splits(labels, split, cfg)
    if split is None:
        return stratified_split(labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    split = split.copy()
    train = np.flatnonzero(split == 0)
    if not (split == 1).any() and cfg.val_fraction > 0:
        frac_test = 0.0 if (split == 2).any() else cfg.test_fraction
        sub = stratified_split(labels[train], cfg.val_fraction, frac_test, cfg.split_seed)
        split[train] = sub
    return split


def fold_splits(labels: np.ndarray, split: np.ndarray | None, cfg: DataConfig) -> np.ndarray:
    """k-fold: a test split the source has is kept (else `test_fraction` is held out first);
    every other image (a source's own val split included) goes into `data.folds` stratified
    folds, and fold `data.fold` is the validation split. `val_fraction` is not used."""
    if cfg.fold is None:
        raise ReslabError(f"data.folds = {cfg.folds} without data.fold: give the fold to "
                          f"train (0..{cfg.folds - 1}), or train every fold with reslab train "
                          f"CONFIG --folds {cfg.folds}")
    has_test = split is not None and bool((split == 2).any())
    pool = np.flatnonzero(split != 2) if has_test else np.arange(len(labels))
    fold_of = stratified_folds(labels[pool], cfg.folds, 0.0 if has_test else cfg.test_fraction,
                               cfg.split_seed)
    out = np.full(len(labels), 2, np.int8)
    out[pool] = np.where(fold_of == cfg.fold, 1, np.where(fold_of < 0, 2, 0))
    check_fold(labels, out, cfg)
    return out


def check_fold(labels: np.ndarray, split: np.ndarray, cfg: DataConfig) -> None:
    """A fold with no validation image is an error (its accuracy would be averaged as if it
    existed); one lacking classes is a one-line warning (its accuracy covers the others)."""
    val = labels[split == 1]
    if len(val) == 0:
        raise ReslabError(f"data.folds = {cfg.folds}: fold {cfg.fold} has no validation "
                          f"images (only {int((split != 2).sum())} non-test images); use "
                          "fewer folds")
    missing = np.setdiff1d(np.unique(labels[split != 2]), np.unique(val))
    if len(missing):
        warn(f"data.folds = {cfg.folds}: fold {cfg.fold}'s validation split lacks "
             f"{len(missing)} of {len(np.unique(labels))} classes (it has {len(val)} images); "
             "its accuracy covers the other classes only (use fewer folds or more images "
             "per class)")


def channel_stats(images: torch.Tensor, scale: float) -> tuple[list[float], list[float]]:
    """Exact per-channel mean/std in [0,1] units, without a float copy of the whole set."""
    if images.dtype == torch.uint8:
        # A 256-bin histogram per channel gives exact first and second moments.
        levels = torch.arange(256, dtype=torch.float64) / scale
        counts = torch.stack([torch.bincount(images[:, c].reshape(-1), minlength=256)
                              for c in range(images.shape[1])]).double()
        n = counts.sum(1)
        mean = (counts * levels).sum(1) / n
        sq = (counts * levels**2).sum(1) / n
    else:
        total = torch.zeros(images.shape[1], dtype=torch.float64)
        sq = torch.zeros_like(total)
        for chunk in images.split(2048):
            x = chunk.float() / scale
            total += x.sum((0, 2, 3)).double()
            sq += (x * x).sum((0, 2, 3)).double()
        n = images.shape[0] * images.shape[2] * images.shape[3]
        mean, sq = total / n, sq / n
    std = (sq - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def detect_format(cfg: DataConfig, images: np.ndarray, paths: list[str] | None) -> str:
    if cfg.format != "auto":
        return cfg.format
    if images.dtype == np.uint8:
        return "srgb"
    if paths and paths[0].lower().endswith(".exr"):
        return "log"
    return "linear"


def load_data(cfg: DataConfig, progress: bool = True) -> DataBundle:
    """Read, decode (once, cached) and split the configured data source."""
    listing = load_listing(cfg)
    images, labels, split, paths, sources = decode_listing(listing, cfg, progress)
    if cfg.max_per_class and listing.arrays is not None:
        keep = first_per_class(labels, cfg.max_per_class)
        images, labels = images[keep], labels[keep]
        split = split[keep] if split is not None else None
    split = assign_splits(labels, split, cfg)
    sets = {}
    for i, name in enumerate(("train", "val", "test")):
        idx = np.flatnonzero(split == i)
        sets[name] = ImageSet(torch.from_numpy(np.ascontiguousarray(images[idx])),
                              torch.from_numpy(labels[idx]),
                              [paths[j] for j in idx] if paths else None,
                              sources) if len(idx) else None
    if sets["train"] is None:
        raise ReslabError(f"data: no training images left after the split "
                          f"(val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction})")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    if cfg.normalize == "dataset":
        mean, std = channel_stats(sets["train"].images, scale)
    elif cfg.normalize == "imagenet":
        mean, std = list(IMAGENET_MEAN[: images.shape[1]]), list(IMAGENET_STD[: images.shape[1]])
    else:
        mean, std = [0.0] * images.shape[1], [1.0] * images.shape[1]
    return DataBundle(sets["train"], sets["val"], sets["test"], listing.classes, mean, std,
                      scale, detect_format(cfg, images, paths),
                      split_record=split_record(labels, split, paths, listing.root))


def split_record(labels: np.ndarray, split: np.ndarray, paths: list[str] | None,
                 root: Path | None) -> dict:
    """{n: [train, val, test], sha256}: a digest of every image's (file relative to data.root,
    or index for a bundled array source; label; split), stored in the run's checkpoints so
    eval and resume can tell the split they would use from the one the run trained on."""
    h = hashlib.sha256()
    for i, (label, part) in enumerate(zip(labels.tolist(), split.tolist())):
        name = relative_name(paths[i], root) if paths else str(i)
        h.update(f"{name}\t{label}\t{part}\n".encode())
    return {"n": [int((split == i).sum()) for i in range(3)], "sha256": h.hexdigest()}


def relative_name(path: str, root: Path | None) -> str:
    try:
        return Path(path).relative_to(root).as_posix() if root else path
    except ValueError:
        return path


def check_split(stored: dict | None, data: DataBundle, where: str) -> None:
    """One line when the data now splits differently from `stored` (a checkpoint's
    norm.split; older checkpoints have none and are not checked)."""
    now = data.split_record
    if stored is None or now is None or stored.get("sha256") == now["sha256"]:
        return
    counts = lambda n: "/".join(str(k) for k in n)  # noqa: E731
    raise ReslabError(f"{where}: the data no longer splits as it did in training (train/val/"
                      f"test {counts(now['n'])} now, {counts(stored['n'])} then: images were "
                      "added, removed, renamed or relabelled under data.root, or a data.* key "
                      "changed); its test split would not be the one the run was scored on")
