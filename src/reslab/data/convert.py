"""Convert an image tree between encodings: 8-bit sRGB PNG, 16-bit linear TIFF, float log EXR.

How a source file is interpreted depends only on its type, so a tree can mix formats:
8-bit JPEG/PNG/TIFF are display-referred sRGB, 16-bit PNG/TIFF and float TIFF hold linear light,
EXR holds ln(linear + LOG_EPS) as written by this tool. Every file goes through linear float32.

Sources are listed exactly as training lists them (`sources.list_images`: hidden files skipped,
symlinked folders followed, loops refused). Nothing is written through a symlink inside DST: a
symlinked folder there would put the output wherever it points, so it is refused before any
file is written; a symlinked *file* at an output name is replaced (the atomic rename replaces
the link itself, never its target).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from rich.progress import Progress

from ..errors import ReslabError
from .imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    check_pixels,
    linear_to_log,
    linear_to_srgb,
    log_to_linear,
    read_image,
    srgb_to_linear,
    write_image,
)
from .sources import list_images

TARGETS: dict[str, str] = {"srgb-png": ".png", "linear-tiff": ".tiff", "log-exr": ".exr"}
# The option that sets convert's pixel limit, named in its errors.
MAX_PIXELS_OPTION = "--max-pixels"


def decode_linear(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as linear-light float32 HWC RGB, by the encoding its file type implies."""
    arr = read_image(path, max_pixels, MAX_PIXELS_OPTION)
    if path.suffix.lower() == ".exr":
        return log_to_linear(arr.astype(np.float32))
    if arr.dtype == np.uint8:
        return srgb_to_linear(arr.astype(np.float32) / 255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535
    return arr.astype(np.float32)


def encode_linear(linear: np.ndarray, to: str) -> np.ndarray:
    """Linear float32 -> the array `write_image` stores for target `to`."""
    if to == "srgb-png":
        return np.rint(np.clip(linear_to_srgb(linear), 0, 1) * 255).astype(np.uint8)
    if to == "linear-tiff":
        return np.rint(np.clip(linear, 0, 1) * 65535).astype(np.uint16)
    return linear_to_log(linear).astype(np.float32)


def _check_paths(src: Path, dst: Path, force: bool) -> None:
    if not src.is_dir():
        raise ReslabError(f"source folder {src} does not exist or is not a folder")
    if dst.is_symlink() and not dst.exists():
        raise ReslabError(f"destination {dst} is a broken symlink (to {os.readlink(dst)})")
    if dst.exists() and not dst.is_dir():
        raise ReslabError(f"destination {dst} exists and is not a folder")
    # Overlapping trees would make a forced rerun convert its own output or overwrite sources.
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise ReslabError(f"destination {dst} and source {src} must not contain each other")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise ReslabError(f"destination {dst} is not empty (use --force to write into it)")


def _plan(src: Path, dst: Path, to: str) -> list[tuple[Path, Path]]:
    """(source, output) pairs; two sources mapping to one output ('a.png' and 'a.jpg'), a
    source inside DST (through a symlink) or a symlinked folder in DST is an error, found
    before anything is written."""
    pairs, seen = [], {}
    dst_real, checked = dst.resolve(), set()
    for source in list_images(src):
        rel = source.relative_to(src)
        out = dst / rel.with_suffix(TARGETS[to])
        if out in seen:
            raise ReslabError(f"{src / seen[out]} and {source} would both be written to {out}")
        if dst_real in Path(os.path.realpath(source)).parents:
            raise ReslabError(f"source image {source} lies inside the destination {dst} "
                              f"(through a symlink: it is {os.path.realpath(source)})")
        _refuse_symlinked_folders(dst, rel.parent, checked)
        seen[out] = rel
        pairs.append((source, out))
    if not pairs:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ReslabError(f"no images ({exts}) found under {src}")
    return pairs


def _refuse_symlinked_folders(dst: Path, rel_folder: Path, checked: set[Path]) -> None:
    """Outputs are written into dst/rel_folder: none of the folders on the way may be a link
    (it would redirect the writes, and with --force overwrite files, wherever it points)."""
    folder = dst
    for name in rel_folder.parts:
        folder = folder / name
        if folder in checked:
            continue
        if folder.is_symlink():
            raise ReslabError(f"{folder} in the destination is a symlink (to "
                              f"{os.readlink(folder)}); reslab convert never writes through "
                              "links: remove it or choose another destination")
        checked.add(folder)


def convert_tree(src: str | os.PathLike, dst: str | os.PathLike, to: str, force: bool = False,
                 progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Convert every image under src into dst with the same relative layout; returns the count.

    With force, files are written into an existing non-empty dst (same names overwritten,
    nothing deleted). Images over `max_pixels` (width x height) are refused before decoding."""
    if to not in TARGETS:
        raise ReslabError(f"unknown target '{to}' (expected one of {', '.join(TARGETS)})")
    if max_pixels < 1:
        raise ReslabError(f"{MAX_PIXELS_OPTION} {max_pixels}: expected 1 or more")
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, force)
    pairs = _plan(src, dst, to)
    for source, _ in pairs:  # headers only: a bomb or a corrupt header stops it before writing
        check_pixels(source, max_pixels, MAX_PIXELS_OPTION)
    show = progress and sys.stdout.isatty()
    with Progress(disable=not show) as bar:
        task = bar.add_task(f"converting to {to}", total=len(pairs))
        for source, out in pairs:
            _write(out, encode_linear(decode_linear(source, max_pixels), to))
            bar.advance(task)
    return len(pairs)


def _write(out: Path, arr: np.ndarray) -> None:
    try:
        write_image(out, arr)
    except OSError as err:  # e.g. a folder where the output file should be, disk full
        raise ReslabError(f"cannot write {out}: {err.strerror or err}") from None
