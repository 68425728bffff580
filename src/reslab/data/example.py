"""Small example image trees for trying reslab (and for the README's own test).

`reslab data example DIR --kind KIND` writes `DIR/<class>/<image>`:
  photos          64x64 RGB JPEGs, 20 per class: big enough for the format study's 63-px crop
  cifar10-subset  32x32 RGB PNGs, 20 per class, laid out as the CIFAR-10 training folder
  formats         the format study's three trees of the photos: DIR/jpeg, DIR/linear, DIR/log

The images are CIFAR-10's training images when `../shared/data/cifar10/train` (relative to the
working directory) holds them, else scikit-learn's bundled digits scaled up (8x8 grey: class
names 0-9). Nothing downloads. A stand-in for trying the commands, not a dataset to publish
results on. Writing the same kind into a DIR that already holds it is a no-op (so a README
can be run twice); any other non-empty DIR is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ReslabError
from ..utils import atomic_write_text
from .convert import convert_tree
from .imageio import read_image, write_image
from .sources import load_digits_listing, scan_class_tree

KINDS = ("photos", "formats", "cifar10-subset")
SHARED_CIFAR = Path("../shared/data/cifar10/train")
PER_CLASS = 20
# A hidden file (image listings skip it) naming the kind: rerunning the command is a no-op.
MARKER = ".reslab-example"


@dataclass(frozen=True)
class ExampleKind:
    size: int
    suffix: str


LAYOUTS = {"photos": ExampleKind(64, ".jpg"), "cifar10-subset": ExampleKind(32, ".png")}


def example_images(per_class: int = PER_CLASS, shared: Path = SHARED_CIFAR
                   ) -> tuple[str, dict[str, list[np.ndarray]]]:
    """(where they came from, class -> HWC uint8 RGB images) from CIFAR-10 or the digits."""
    if shared.is_dir():
        tree = scan_class_tree(shared, per_class)
        return str(shared), {name: [read_image(p) for p in paths] for name, paths in tree.items()}
    listing = load_digits_listing()
    images: dict[str, list[np.ndarray]] = {name: [] for name in listing.classes}
    for label, arr in zip(listing.labels, listing.arrays):
        bucket = images[listing.classes[int(label)]]
        if len(bucket) < per_class:
            bucket.append(np.repeat(arr.transpose(1, 2, 0), 3, axis=2))
    return "the bundled digits", images


def resized(arr: np.ndarray, size: int) -> np.ndarray:
    rgb = arr if arr.ndim == 3 and arr.shape[2] == 3 else np.repeat(arr.reshape(*arr.shape[:2], 1),
                                                                      3, axis=2)
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))


def write_example(dest: str | Path, kind: str = "photos", per_class: int = PER_CLASS,
                  shared: Path = SHARED_CIFAR) -> str:
    """Write the example tree; returns one line saying what was written from where."""
    if kind not in KINDS:
        raise ReslabError(f"--kind {kind}: expected one of {', '.join(KINDS)}")
    dest = Path(dest)
    marker = dest / MARKER
    if marker.is_file() and marker.read_text().strip() == kind:
        return f"example data: {dest} already holds the {kind} example; left as it is"
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ReslabError(f"{dest} exists and is not an empty folder: choose a new DIR")
    origin, images = example_images(per_class, shared)
    if kind == "formats":
        write_tree(dest / "jpeg", images, LAYOUTS["photos"])
        convert_tree(dest / "jpeg", dest / "linear", "linear-tiff", progress=False)
        convert_tree(dest / "jpeg", dest / "log", "log-exr", progress=False)
        what = "jpeg/ (8-bit sRGB JPEG), linear/ (16-bit linear TIFF), log/ (log EXR), 64x64"
    else:
        layout = LAYOUTS[kind]
        write_tree(dest, images, layout)
        what = f"{layout.size}x{layout.size} RGB {layout.suffix[1:].upper()}"
    atomic_write_text(marker, kind + "\n")  # written last: a rerun finds a complete tree
    count = sum(len(v) for v in images.values())
    return (f"example data: {count} images in {len(images)} classes from {origin} -> {dest} "
            f"({what})")


def write_tree(dest: Path, images: dict[str, list[np.ndarray]], layout: ExampleKind) -> None:
    for name, arrays in images.items():
        for i, arr in enumerate(arrays):
            write_image(dest / name / f"{i:04d}{layout.suffix}", resized(arr, layout.size))
