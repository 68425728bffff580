"""Where images come from: digits (bundled), CIFAR-10 (torchvision format), image folders,
a CSV labels file naming images under a root, arrays in a .npz file.

Each source yields a `Listing`: either decoded arrays (digits, CIFAR-10, npz) or a list of files
(folder, csv) that the cache decodes once. Class names are folder names in natural order, so a
label never depends on how another folder happens to sort.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import ReslabError
from ..utils import natural_key, natural_sorted

SPLITS = ("train", "val", "test")
# Folders macOS puts into zip archives: resource forks, never images.
SKIPPED_FOLDERS = frozenset({"__MACOSX"})


@dataclass
class Listing:
    classes: list[str]
    labels: np.ndarray                       # (N,) int64
    split: np.ndarray | None = None          # (N,) 0/1/2 for train/val/test, None: split later
    arrays: np.ndarray | None = None         # (N,C,H,W) uint8 when already decoded
    files: list[Path] = field(default_factory=list)
    root: Path | None = None


def image_extensions() -> frozenset[str]:
    from .imageio import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def load_digits_listing() -> Listing:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 grey levels 0..16 -> uint8 0..255, one channel.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return Listing([str(i) for i in range(10)], digits.target.astype(np.int64), arrays=images)


def load_cifar10_listing(cfg: DataConfig) -> Listing:
    from torchvision.datasets import CIFAR10

    root = Path(cfg.root or "data/cifar10").expanduser()
    try:
        train = CIFAR10(str(root), train=True, download=cfg.download)
        test = CIFAR10(str(root), train=False, download=cfg.download)
    except RuntimeError as err:
        if cfg.download:
            raise ReslabError(f"data.root: could not download CIFAR-10 to {root}: {err}") from None
        raise ReslabError(
            f"data.root: CIFAR-10 not found at {root / 'cifar-10-batches-py'}; put the extracted "
            "'CIFAR-10 python version' there (cifar-10-python.tar.gz) or set data.download: true"
        ) from None
    arrays = np.concatenate([train.data, test.data]).transpose(0, 3, 1, 2)
    labels = np.asarray(train.targets + test.targets, dtype=np.int64)
    split = np.r_[np.zeros(len(train.data), np.int8), np.full(len(test.data), 2, np.int8)]
    return Listing(list(train.classes), labels, split=split, arrays=np.ascontiguousarray(arrays),
                   root=root)


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, as root/<relative path>, in natural order of the
    relative path. The one lister behind training, `convert` and `predict`.

    Hidden files and folders ('.x'; macOS '._x.jpg' resource forks are not images) and
    '__MACOSX' folders are skipped. Symlinked folders are followed like real ones; a link to a
    folder that contains it (a loop) is an error. A broken link with an image extension is
    listed, so that reading it fails with its name instead of the image silently missing."""
    root = Path(root)
    found: list[Path] = []
    _walk_images(root, Path(), image_extensions(), frozenset({os.path.realpath(root)}), found)
    found.sort(key=lambda rel: natural_key(rel.as_posix()))
    return [root / rel for rel in found]


def _walk_images(root: Path, rel: Path, exts: frozenset[str], ancestors: frozenset[str],
                 found: list[Path]) -> None:
    """Append the images under root/rel to `found`; `ancestors`: real paths of the folders
    being walked (a folder that resolves to one of them closes a loop)."""
    folder = root / rel
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise ReslabError(f"cannot list folder {folder}: {err.strerror or err}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():  # follows symlinks, as training always has for class folders
            real = os.path.realpath(entry.path)
            if real in ancestors:
                raise ReslabError(f"symlink loop: {entry.path} points to {real}, a folder that "
                                  "contains it")
            if entry.name not in SKIPPED_FOLDERS:
                _walk_images(root, rel / entry.name, exts, ancestors | {real}, found)
        elif Path(entry.name).suffix.lower() in exts and (entry.is_file() or entry.is_symlink()):
            found.append(rel / entry.name)


def scan_class_tree(root: Path, max_per_class: int | None = None) -> dict[str, list[Path]]:
    """class name -> its image files (recursively, natural order); errors name the folder."""
    if not root.is_dir():
        raise ReslabError(f"data.root: {root} does not exist or is not a directory")
    exts = image_extensions()
    class_dirs = natural_sorted(d.name for d in root.iterdir() if d.is_dir()
                                and not d.name.startswith(".") and d.name not in SKIPPED_FOLDERS)
    if not class_dirs:
        raise ReslabError(f"data.root: {root} has no class folders "
                          f"(expected {root}/<class>/<image>.jpg)")
    tree = {}
    for name in class_dirs:
        files = list_images(root / name)
        if not files:
            raise ReslabError(f"class folder {root / name} has no images "
                              f"(expected {', '.join(sorted(exts))})")
        tree[name] = files[:max_per_class] if max_per_class else files
    return tree


def load_folder_listing(cfg: DataConfig) -> Listing:
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise ReslabError(f"data.root: {root} does not exist")
    layout = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" not in layout:
        return _listing_from_tree(scan_class_tree(root, cfg.max_per_class), None, root)
    trees = {s: scan_class_tree(p, cfg.max_per_class) for s, p in layout.items()}
    classes = list(trees["train"])
    if len(classes) < 2:  # a 1-output model would train, then fail at its first evaluation
        raise ReslabError(f"data.root: {layout['train']} has {len(classes)} class folder; "
                          "expected at least 2")
    for s, tree in trees.items():
        unknown = [c for c in tree if c not in classes]
        if unknown:
            raise ReslabError(f"{layout[s]}: class folder(s) {', '.join(unknown)} not in "
                              f"{layout['train']} (the classes are the train folders)")
    files, labels, split = [], [], []
    for s, tree in trees.items():
        for name, paths in tree.items():
            files += paths
            labels += [classes.index(name)] * len(paths)
            split += [SPLITS.index(s)] * len(paths)
    return Listing(classes, np.asarray(labels, np.int64), np.asarray(split, np.int8),
                   files=files, root=root)


def _listing_from_tree(tree: dict[str, list[Path]], split, root: Path) -> Listing:
    classes = list(tree)
    if len(classes) < 2:
        raise ReslabError(f"data.root: {root} has {len(classes)} class folder; "
                          "expected at least 2")
    files = [p for paths in tree.values() for p in paths]
    labels = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(tree.values())])
    return Listing(classes, labels, split, files=files, root=root)


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> np.ndarray:
    """Seeded per-class split: returns (N,) 0/1/2 (train/val/test); each class keeps its share."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), np.int8)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = round(len(idx) * val_fraction), round(len(idx) * test_fraction)
        split[idx[:n_val]] = 1
        split[idx[n_val:n_val + n_test]] = 2
    return split


def stratified_folds(labels: np.ndarray, folds: int, test_fraction: float,
                     seed: int) -> np.ndarray:
    """Seeded per-class k-fold assignment: (N,) fold index 0..folds-1, or -1 for the test
    hold-out (each class's first `test_fraction` after the seeded shuffle, taken before any
    fold). Each class is dealt round-robin, starting where the previous class stopped, so
    every fold holds each class's share and the folds' sizes differ by at most one."""
    rng = np.random.default_rng(seed)
    fold_of = np.full(len(labels), -1, np.int64)
    dealt = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        rest = idx[round(len(idx) * test_fraction):]
        fold_of[rest] = (dealt + np.arange(len(rest))) % folds
        dealt += len(rest)
    return fold_of


def load_listing(cfg: DataConfig) -> Listing:
    if cfg.source == "digits":
        return load_digits_listing()
    if cfg.source == "cifar10":
        return load_cifar10_listing(cfg)
    if cfg.source == "csv":
        return load_csv_listing(cfg)
    if cfg.source == "npz":
        return load_npz_listing(cfg)
    return load_folder_listing(cfg)


# --------------------------------------------------------------------------- csv, npz
def labels_file(cfg: DataConfig) -> Path:
    """data.labels: absolute, or relative to data.root."""
    path = Path(cfg.labels).expanduser()
    return path if path.is_absolute() else Path(cfg.root).expanduser() / path


def load_csv_listing(cfg: DataConfig) -> Listing:
    """Images named in a CSV file (columns data.columns.path, .label, optional .split), paths
    relative to data.root. Rows are ordered by class, then path, as a class-folder tree of the
    same files lists them, so a CSV and a folder of the same images train the same run."""
    root, table = Path(cfg.root).expanduser(), labels_file(cfg)
    if not root.is_dir():
        raise ReslabError(f"data.root: {root} does not exist or is not a directory")
    rows = read_label_rows(table, cfg.columns)
    names = natural_sorted({label for _, label, _ in rows})
    splits = [s for _, _, s in rows]
    if len(names) < 2:
        raise ReslabError(f"{table}: {len(names)} class in column {cfg.columns.label!r}; "
                          "expected at least 2")
    if any(s is not None for s in splits):
        names = _train_classes(table, rows, cfg.columns.label)
    base = root.resolve()
    entries = []
    for line, (rel, label, split) in enumerate(rows, start=2):
        entries.append((names.index(label), natural_key(rel), _file_in_root(root, base, rel,
                        f"{table} line {line}"), split))
    entries.sort(key=lambda e: (e[0], e[1]))
    if cfg.max_per_class:
        seen = Counter()
        entries = [e for e in entries if seen.update([e[0]]) or seen[e[0]] <= cfg.max_per_class]
    split = None if splits[0] is None else np.asarray([SPLITS.index(e[3]) for e in entries],
                                                      np.int8)
    return Listing(names, np.asarray([e[0] for e in entries], np.int64), split,
                   files=[e[2] for e in entries], root=root)


def read_label_rows(table: Path, columns) -> list[tuple[str, str, str | None]]:
    """(path, label, split or None) per row of the labels CSV; one-line errors."""
    import csv

    if not table.is_file():
        raise ReslabError(f"data.labels: {table} not found")
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (columns.path, columns.label) if c not in header]
        if missing:
            raise ReslabError(f"{table}: no column {missing[0]!r} (header: {', '.join(header)}; "
                              "set data.columns.path / .label)")
        has_split = columns.split in header
        rows = []
        for line, row in enumerate(reader, start=2):
            rel, label = (row[columns.path] or "").strip(), (row[columns.label] or "").strip()
            split = (row[columns.split] or "").strip() if has_split else None
            if not rel or not label:
                raise ReslabError(f"{table} line {line}: empty {columns.path!r} or "
                                  f"{columns.label!r}")
            if split is not None and split not in SPLITS:
                raise ReslabError(f"{table} line {line}: {columns.split} = {split!r}: expected "
                                  "train, val or test")
            rows.append((rel, label, split))
    if not rows:
        raise ReslabError(f"{table}: no rows")
    return rows


def _train_classes(table: Path, rows: list, column: str) -> list[str]:
    """With a split column the classes are the train rows' labels; others are unknown."""
    names = natural_sorted({label for _, label, split in rows if split == "train"})
    for line, (_, label, _) in enumerate(rows, start=2):
        if label not in names:
            raise ReslabError(f"{table} line {line}: unknown label {label!r} in {column!r} (the "
                              f"classes are the train rows' labels: {', '.join(names)})")
    return names


def _file_in_root(root: Path, base: Path, rel: str, where: str) -> Path:
    path = root / rel
    if not path.resolve().is_relative_to(base):
        raise ReslabError(f"{where}: {rel} is outside data.root {root}")
    if not path.is_file():
        raise ReslabError(f"{where}: image {path} not found")
    return path


def load_npz_listing(cfg: DataConfig) -> Listing:
    """Decoded images in a .npz file (data.root): x uint8 (N,H,W), (N,H,W,C) or (N,C,H,W);
    y labels 0..K-1; optional split (0/1/2 or train/val/test) and classes (K names)."""
    path, keys = Path(cfg.root).expanduser(), cfg.arrays
    if not path.is_file():
        raise ReslabError(f"data.root: {path} not found (source npz: a .npz file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise ReslabError(f"data.root: {path}: not a readable .npz file ({err})") from None
    for key in (keys.x, keys.y):
        if key not in found:
            raise ReslabError(f"{path}: no array {key!r} (arrays: {', '.join(found)}; set "
                              "data.arrays.x / .y)")
    images, labels = _npz_images(path, found[keys.x], keys.x), found[keys.y]
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ReslabError(f"{path}: {keys.y} has shape {labels.shape} ({labels.dtype}); "
                          f"expected {len(images)} integer labels")
    names = ([str(c) for c in found[keys.classes]] if keys.classes in found
             else [str(i) for i in range(int(labels.max()) + 1)])
    bad = labels[(labels < 0) | (labels >= len(names))]
    if bad.size:
        raise ReslabError(f"{path}: unknown label {int(bad[0])} in {keys.y} (expected 0.."
                          f"{len(names) - 1}, one per class of {keys.classes!r})")
    split = _npz_split(path, found.get(keys.split), len(images), keys.split)
    return Listing(names, labels.astype(np.int64), split, arrays=images, root=path)


def _npz_images(path: Path, x: np.ndarray, key: str) -> np.ndarray:
    """(N,C,H,W) uint8 from the layouts arrays come in."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise ReslabError(f"{path}: {key} is {x.dtype} {x.shape}; expected uint8 images "
                          "(N,H,W), (N,H,W,C) or (N,C,H,W) with C 1 or 3")
    if x.ndim == 3:
        return np.ascontiguousarray(x[:, None])
    if x.shape[-1] in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.shape[1] in (1, 3):
        return np.ascontiguousarray(x)
    raise ReslabError(f"{path}: {key} has shape {x.shape}; expected 1 or 3 channels first or "
                      "last")


def _npz_split(path: Path, split: np.ndarray | None, n: int, key: str) -> np.ndarray | None:
    if split is None:
        return None
    if split.shape == (n,) and split.dtype.kind in "US":
        split = split.astype(str)
        known = np.isin(split, SPLITS)
        if known.all():
            return np.asarray([SPLITS.index(s) for s in split], np.int8)
    elif split.shape == (n,) and split.dtype.kind in "iu" and np.isin(split, (0, 1, 2)).all():
        return split.astype(np.int8)
    raise ReslabError(f"{path}: {key} must hold {n} values 0/1/2 or train/val/test")
