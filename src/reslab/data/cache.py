"""Decode every image once into an (N,C,H,W) array on disk, memory-mapped on reuse.

The cache key covers the file list, each file's size and mtime, and the preprocessing, so an
edited dataset or a new crop size decodes again and nothing stale is ever read. 8-bit images
are stored as uint8; 16-bit and float (HDR) images as float16 in [0,1] / as stored.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReslabError
from ..progress import track
from ..utils import atomic_write_text, available_cores

CACHE_VERSION = 1


@dataclass(frozen=True)
class Preprocess:
    resize: int | None = None        # shorter side, before the centre crop
    center_crop: int | None = None
    image_size: int | None = None    # final square side

    def apply(self, arr: np.ndarray, path: Path) -> np.ndarray:
        """HWC image -> CHW array of the same dtype, resized/cropped as configured."""
        img = np.ascontiguousarray(arr.transpose(2, 0, 1))
        h, w = img.shape[1:]
        if self.resize and min(h, w) != self.resize:
            scale = self.resize / min(h, w)
            img = resample(img, max(1, round(h * scale)), max(1, round(w * scale)))
        if self.center_crop:
            c = self.center_crop
            h, w = img.shape[1:]
            if min(h, w) < c:
                raise ReslabError(f"image {path} is {h}x{w}, smaller than "
                                  f"data.center_crop={c}")
            top, left = (h - c) // 2, (w - c) // 2
            img = img[:, top:top + c, left:left + c]
        s = self.image_size
        if s and img.shape[1:] != (s, s):
            img = resample(img, s, s)
        return np.ascontiguousarray(img)


def resample(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased bilinear resize of a CHW or NCHW array, keeping its dtype."""
    t = torch.from_numpy(img.astype(np.float32))
    batch = t if t.ndim == 4 else t[None]
    out = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    out = out if t.ndim == 4 else out[0]
    if np.issubdtype(img.dtype, np.integer):
        out = out.round().clamp(0, np.iinfo(img.dtype).max)
    return out.numpy().astype(img.dtype)


def default_cache_dir() -> Path:
    env = os.environ.get("RESLAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reslab"


def cache_key(files: list[Path], prep: Preprocess, skip_bad: bool) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, prep.__dict__, skip_bad]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(job: tuple[Path, Preprocess, bool]) -> np.ndarray | str:
    from .imageio import read_image

    path, prep, skip_bad = job
    try:
        return prep.apply(read_image(path), path)
    except ReslabError as err:
        if skip_bad:
            return str(err)
        raise


def _stored(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    from .imageio import to_float01

    return to_float01(arr.transpose(1, 2, 0)).transpose(2, 0, 1).astype(np.float16)


def decode_files(files: list[Path], prep: Preprocess, cache_dir: Path | None,
                 skip_bad: bool = False, workers: int | None = None,
                 progress: bool = True) -> tuple[np.ndarray, list[int]]:
    """(N,C,H,W) array of every file (bad files dropped when skip_bad) and the kept indices."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    entry = cache_dir / f"images-{cache_key(files, prep, skip_bad)}"
    if (entry / "meta.json").exists():
        meta = json.loads((entry / "meta.json").read_text())
        return np.load(entry / "images.npy", mmap_mode="r"), meta["kept"]
    images, kept, bad = _decode_all(files, prep, skip_bad, workers, progress)
    entry.mkdir(parents=True, exist_ok=True)
    tmp = entry / f"images.{os.getpid()}.tmp.npy"
    np.save(tmp, images)
    os.replace(tmp, entry / "images.npy")
    atomic_write_text(entry / "meta.json", json.dumps({"n": len(files), "kept": kept, "bad": bad}))
    return np.load(entry / "images.npy", mmap_mode="r"), kept


def _decode_all(files, prep, skip_bad, workers, progress):
    workers = workers or min(available_cores(), 8)
    jobs = [(f, prep, skip_bad) for f in files]
    out, kept, bad = None, [], []
    pool = (ProcessPoolExecutor(workers, initializer=_worker_init)
            if workers > 1 and len(files) > 256 else None)
    try:
        results = pool.map(_decode, jobs, chunksize=64) if pool else map(_decode, jobs)
        for i, arr in enumerate(track(results, total=len(files), description="decoding",
                                      enabled=progress)):
            if isinstance(arr, str):
                bad.append(arr)
                continue
            arr = _stored(arr)
            if out is None:
                out = np.empty((len(files), *arr.shape), arr.dtype)
                first = files[i]
            elif arr.shape != out.shape[1:] or arr.dtype != out.dtype:
                raise ReslabError(_mismatch(first, out, files[i], arr))
            out[len(kept)] = arr
            kept.append(i)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable file(s): " + "; ".join(bad), stacklevel=2)
        print(f"warning: skipped {len(bad)} unreadable file(s):\n  " + "\n  ".join(bad),
              file=sys.stderr)
    if out is None:
        raise ReslabError("no readable images: every file failed to decode")
    return out[: len(kept)], kept, bad


def _mismatch(first: Path, out: np.ndarray, path: Path, arr: np.ndarray) -> str:
    if arr.dtype != out.dtype:
        return (f"mixed bit depths: {first} is {out.dtype}, {path} is {arr.dtype}; convert the "
                "tree to one format with `reslab convert`")
    return (f"images differ in size: {first} is {out.shape[2]}x{out.shape[3]}, {path} is "
            f"{arr.shape[1]}x{arr.shape[2]}; set data.image_size (and/or data.center_crop)")


def _worker_init() -> None:
    # Decoding processes run side by side: one intra-op thread each, as DataLoader workers do.
    torch.set_num_threads(1)
