"""Convert an image tree between encodings: 8-bit sRGB PNG, 16-bit linear TIFF, float log EXR.

How a source file is interpreted depends only on its type, so a tree can mix formats:
8-bit JPEG/PNG/TIFF are display-referred sRGB, 16-bit PNG/TIFF and float TIFF hold linear light,
EXR holds ln(linear + LOG_EPS) as written by this tool. Every file goes through linear float32.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from rich.progress import Progress

from ..errors import ReslabError
from .imageio import (IMAGE_EXTENSIONS, linear_to_log, linear_to_srgb, log_to_linear,
                      read_image, srgb_to_linear, write_image)

TARGETS: dict[str, str] = {"srgb-png": ".png", "linear-tiff": ".tiff", "log-exr": ".exr"}


def decode_linear(path: Path) -> np.ndarray:
    """Read an image as linear-light float32 HWC RGB, by the encoding its file type implies."""
    arr = read_image(path)
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


def _list_images(src: Path) -> list[Path]:
    """Image files under src, relative to it, in a stable order. Hidden files and folders are
    skipped: macOS leaves '._x.jpg' resource forks beside images that are not images."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f).relative_to(src) for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def _check_paths(src: Path, dst: Path, force: bool) -> None:
    if not src.is_dir():
        raise ReslabError(f"source folder {src} does not exist or is not a folder")
    if dst.exists() and not dst.is_dir():
        raise ReslabError(f"destination {dst} exists and is not a folder")
    # Overlapping trees would make a forced rerun convert its own output or overwrite sources.
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise ReslabError(f"destination {dst} and source {src} must not contain each other")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise ReslabError(f"destination {dst} is not empty (use --force to write into it)")


def _plan(src: Path, dst: Path, to: str) -> list[tuple[Path, Path]]:
    """(source, output) pairs; two sources mapping to one output ('a.png' and 'a.jpg') is an
    error, found before anything is written."""
    pairs, seen = [], {}
    for rel in _list_images(src):
        out = dst / rel.with_suffix(TARGETS[to])
        if out in seen:
            raise ReslabError(f"{src / seen[out]} and {src / rel} would both be written to {out}")
        seen[out] = rel
        pairs.append((src / rel, out))
    if not pairs:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ReslabError(f"no images ({exts}) found under {src}")
    return pairs


def convert_tree(src: str | os.PathLike, dst: str | os.PathLike, to: str, force: bool = False,
                 progress: bool = True) -> int:
    """Convert every image under src into dst with the same relative layout; returns the count.

    With force, files are written into an existing non-empty dst (same names overwritten,
    nothing deleted)."""
    if to not in TARGETS:
        raise ReslabError(f"unknown target '{to}' (expected one of {', '.join(TARGETS)})")
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, force)
    pairs = _plan(src, dst, to)
    show = progress and sys.stdout.isatty()
    with Progress(disable=not show) as bar:
        task = bar.add_task(f"converting to {to}", total=len(pairs))
        for source, out in pairs:
            write_image(out, encode_linear(decode_linear(source), to))
            bar.advance(task)
    return len(pairs)
