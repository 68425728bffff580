"""Decode every image once into an (N,C,H,W) array on disk, memory-mapped on reuse.

The cache key covers the file list, each file's size, mtime, ctime and inode, and the
preprocessing, so an edited dataset (a same-size file replaced with its old mtime included)
or a new crop size decodes again and nothing stale is ever read. A cache folder that cannot
be written is one warning line: the images decoded in memory are used. 8-bit images
are stored as uint8; 16-bit and float (HDR) images as float16 in [0,1] / as stored. As float16
cannot tell 16-bit from float files apart, meta.json records the files' own sample types
(`sources`: uint8, uint16, float16, float32), the units `robustness --raw` adds its amounts in.

Integrity. An entry is `images.npy` plus `meta.json`, which records the array's shape, dtype,
byte count, a CRC32 per 4 MiB chunk, and the file's (size, mtime, ctime, inode) when its
contents were last known good. Writing is crash-safe: the array goes to a temp file, is
fsynced and renamed into place, and meta.json is written (atomically) last, so an entry whose
decode was killed has no meta.json and is decoded again. Opening an entry always checks, cheaply,
that meta.json parses and agrees with the npy header and the exact file size (a truncated,
missing or garbled file is caught here). The data itself is checked against the chunk CRCs:
in full when the entry is up to FULL_CHECK_BYTES, or when the file's (size, mtime, ctime,
inode) differ from the recorded ones (the file was written to or replaced since); otherwise
SAMPLED_CHUNKS random chunks. Measured once on the development machine (page cache warm, 2
busy cores): the chunk CRCs of CIFAR-10's 154 MB array (50,000 x 3 x 32 x 32 uint8) take 39 ms
(zlib.crc32, ~4 GB/s), the whole open with meta.json 45-53 ms; far below the cost of reading
the array for training, which follows anyway. So entries up to 1 GiB (~0.25 s) are always
checked whole, and only larger ones rely on the stat signature plus samples between full
checks. Damage prints one warning line and the entry is rebuilt from the images.

Decoding workers (a process pool for large file lists) apply the same pixel limit as every
reader (`data.max_pixels`, checked from the header before decoding), and each caps its own
address space at its size when it starts plus DECODE_BYTES_PER_PIXEL x max_pixels + 1 GiB
(Linux), so a decoder that misbehaves fails with a one-line error naming the file instead of
exhausting the machine.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import socket
import uuid
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReslabError
from ..output import warn
from ..progress import track
from ..utils import atomic_write_text, available_cores, fsync_dir
from .imageio import DEFAULT_MAX_PIXELS

FLOAT16_MAX = 65504.0             # the largest finite float16: HDR pixels are cached as float16
CACHE_VERSION = 3                 # 3: meta.json records `sources`
CHUNK_BYTES = 4 << 20
FULL_CHECK_BYTES = 1 << 30        # entries up to this size are checksummed whole on every open
SAMPLED_CHUNKS = 8                # chunks checked on each open of a larger, unchanged entry
STORED_DTYPES = ("uint8", "float16")
SOURCE_DTYPES = ("uint8", "uint16", "float16", "float32")  # what read_image returns
# Peak bytes per pixel of decoding + preprocessing (float32 copies of an RGB(A) image), with
# room to spare: the worker's address-space allowance above its size at start.
DECODE_BYTES_PER_PIXEL = 64


@dataclass(frozen=True)
class Preprocess:
    resize: int | None = None        # shorter side, before the centre crop
    center_crop: int | None = None
    image_size: int | None = None    # final square side
    nonfinite: str = "error"         # data.nonfinite: NaN/inf float pixels refused or clamped

    def apply(self, arr: np.ndarray, path: Path) -> np.ndarray:
        """HWC image -> CHW array of the same dtype, resized/cropped as configured."""
        arr = finite_pixels(arr, path, self.nonfinite)
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


def finite_pixels(arr: np.ndarray, path: Path, policy: str) -> np.ndarray:
    """A float image's pixels, all finite and inside float16's range (the cache's HDR type):
    otherwise one line naming the file (`data.nonfinite: error`), or NaN -> 0 and the rest
    clamped to +-65504 (`clamp`). Integer images are finite by construction."""
    if not np.issubdtype(arr.dtype, np.floating):
        return arr
    bad = ~np.isfinite(arr) | (np.abs(arr) > FLOAT16_MAX)
    if not bad.any():
        return arr
    if policy == "clamp":
        return np.nan_to_num(arr, nan=0.0, posinf=FLOAT16_MAX, neginf=-FLOAT16_MAX).clip(
            -FLOAT16_MAX, FLOAT16_MAX).astype(arr.dtype)
    counts = {"NaN": int(np.isnan(arr).sum()), "inf": int(np.isinf(arr).sum())}
    counts["beyond +-65504"] = int(bad.sum()) - counts["NaN"] - counts["inf"]
    seen = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    raise ReslabError(f"cannot read image {path}: {seen} pixel value(s) of {bad.size} "
                      f"({arr.dtype}); fix the file, or set data.nonfinite: clamp (NaN -> 0, "
                      "the rest clamped to +-65504)")


def cache_key(files: list[Path], prep: Preprocess, skip_bad: bool,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    # The pixel limit decides which files a skip_bad entry leaves out; without skip_bad an
    # entry exists only when every image was under the limit, so the limit is not part of it.
    # data.nonfinite: error (the default) is left out, so entries made before it stay valid.
    prep_key = {k: v for k, v in prep.__dict__.items() if (k, v) != ("nonfinite", "error")}
    settings = [CACHE_VERSION, prep_key, skip_bad] + ([max_pixels] if skip_bad else [])
    h = hashlib.sha256(json.dumps(settings).encode())
    for f in files:
        try:
            st = f.stat()
            # ctime and inode too: a same-size image replaced with its old mtime kept (cp -p,
            # rsync -t, mv) still gets a new ctime or inode, so it is decoded again instead of
            # the cache serving its old pixels; neither needs reading the file.
            stamp = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
        except OSError:  # e.g. a broken link: decoding reports it by name
            stamp = "-1"
        h.update(f"{f}\0{stamp}\n".encode())
    return h.hexdigest()[:20]


def decode_files(files: list[Path], prep: Preprocess, cache_dir: Path | None,
                 skip_bad: bool = False, workers: int | None = None, progress: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list[int], list[str]]:
    """(N,C,H,W) array of every file (bad files dropped when skip_bad), the kept indices and
    the files' sample types (`sources`, sorted)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    entry = cache_dir / f"images-{cache_key(files, prep, skip_bad, max_pixels)}"
    cached = open_entry(entry, len(files))
    if cached is not None:
        return cached
    images, kept, bad, sources = _decode_all(files, prep, skip_bad, workers, progress,
                                             max_pixels)
    return write_entry(entry, images, {"n": len(files), "kept": kept, "bad": bad,
                                       "sources": sources})


# ---------------------------------------------------------------- reading and checking entries

class _Damaged(Exception):
    """A cache entry that must not be used; the message (one line) says why."""


def open_entry(entry: Path, n_files: int) -> tuple[np.ndarray, list[int], list[str]] | None:
    """The entry's memory-mapped array, kept indices and sources; None when it must be decoded:
    absent, or unusable, which one warning line on stderr reports."""
    meta_path = entry / "meta.json"
    if not meta_path.exists():
        if (entry / "images.npy").exists():
            _warn_unusable(entry, "it has no meta.json: its writing was interrupted")
        return None
    try:
        meta = _read_meta(meta_path, n_files)
        images = _open_checked(entry / "images.npy", meta, meta_path)
    except _Damaged as err:
        _warn_unusable(entry, str(err))
        return None
    _report_bad(meta["bad"])
    return images, meta["kept"], meta["sources"]


def _warn_unusable(entry: Path, reason: str) -> None:
    warn(f"decoded-image cache {entry} is unusable ({reason}); decoding the images again")


def _read_meta(meta_path: Path, n_files: int) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
        problems = _meta_problems(meta, n_files)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise _Damaged(f"meta.json is unreadable or garbled ({type(err).__name__}: "
                       f"{' '.join(str(err).split())[:120]})") from None
    if problems:
        raise _Damaged(f"meta.json is garbled or stale (bad {', '.join(problems)})")
    return meta


def _meta_problems(meta: dict, n_files: int) -> list[str]:
    """Names of the fields of meta.json that are inconsistent (empty when it is sound)."""
    arr, kept = meta["array"], meta["kept"]
    shape, sums, chunk = arr["shape"], arr["crc32"], arr["chunk_bytes"]
    dtype_ok = arr["dtype"] in STORED_DTYPES
    nbytes = math.prod(shape) * (np.dtype(arr["dtype"]).itemsize if dtype_ok else 0)
    checks = {
        "version": meta["version"] == CACHE_VERSION,
        "n": meta["n"] == n_files,
        "dtype": dtype_ok,
        "shape": len(shape) == 4 and all(type(d) is int and d > 0 for d in shape)
        and shape[0] == len(kept),
        "kept": all(type(i) is int for i in kept) and kept == sorted(set(kept))
        and all(0 <= i < n_files for i in kept[:1] + kept[-1:]),
        "bad": isinstance(meta["bad"], list),
        "sources": isinstance(meta["sources"], list) and set(meta["sources"]) <= set(SOURCE_DTYPES),
        "nbytes": arr["nbytes"] == nbytes,
        "crc32": type(chunk) is int and chunk > 0 and len(sums) == -(-nbytes // chunk)
        and all(type(c) is int for c in sums),
    }
    return [name for name, ok in checks.items() if not ok]


def _open_checked(path: Path, meta: dict, meta_path: Path) -> np.memmap:
    try:
        with open(path, "rb") as f:
            return _check_and_map(f, meta, meta_path)
    except FileNotFoundError:
        raise _Damaged("images.npy is missing") from None
    except OSError as err:  # unreadable, or an I/O error while checking
        raise _Damaged(f"images.npy cannot be read ({err.strerror or err})") from None


def _check_and_map(f: BinaryIO, meta: dict, meta_path: Path) -> np.memmap:
    """Check images.npy against meta.json (header, size, chunk checksums) and map it."""
    arr = meta["array"]
    offset = _check_header(f, arr)
    st = os.fstat(f.fileno())
    if st.st_size != offset + arr["nbytes"]:
        raise _Damaged(f"images.npy is {st.st_size:,} bytes, expected "
                       f"{offset + arr['nbytes']:,}: truncated or overwritten")
    unchanged = _signature(st) == meta.get("verified")
    full = arr["nbytes"] <= FULL_CHECK_BYTES or not unchanged
    _check_chunks(f, offset, arr, None if full else SAMPLED_CHUNKS)
    if not unchanged:
        _record_verified(meta_path, meta, st)
    # The map holds its own handle on the file just checked, even if it is replaced later.
    return np.memmap(f, dtype=arr["dtype"], mode="r", offset=offset, shape=tuple(arr["shape"]))


def _check_header(f: BinaryIO, arr: dict) -> int:
    """The npy header must describe the array meta.json records; returns the data offset."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
        shape, fortran, dtype = read(f)
    except Exception as err:  # noqa: BLE001 (numpy raises ValueError, SyntaxError... on garbage)
        raise _Damaged(f"images.npy has no valid npy header ({type(err).__name__})") from None
    if list(shape) != arr["shape"] or dtype != np.dtype(arr["dtype"]) or fortran:
        raise _Damaged(f"images.npy holds {dtype} {shape}, meta.json records {arr['dtype']} "
                       f"{tuple(arr['shape'])}")
    return f.tell()


def _check_chunks(f: BinaryIO, offset: int, arr: dict, sample: int | None) -> None:
    """Compare the data's chunks with their CRC32s: all of them, or `sample` random ones."""
    sums, size = arr["crc32"], arr["chunk_bytes"]
    chunks = range(len(sums)) if sample is None or sample >= len(sums) else \
        sorted(random.sample(range(len(sums)), sample))
    for i in chunks:
        f.seek(offset + i * size)
        if zlib.crc32(f.read(size)) != sums[i]:
            end = min(arr["nbytes"], (i + 1) * size)
            raise _Damaged(f"images.npy data bytes {i * size:,}..{end:,} do not match their "
                           f"checksum (chunk {i + 1} of {len(sums)})")


def _signature(st: os.stat_result) -> list[int]:
    # ctime cannot be set back by a user (unlike mtime), so any write since is visible in it.
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _record_verified(meta_path: Path, meta: dict, st: os.stat_result) -> None:
    """Remember that the file as it is now passed the full check (so large entries go back to
    sampled checks). Best effort: a read-only cache is just checked in full next time."""
    with contextlib.suppress(OSError):
        atomic_write_text(meta_path, json.dumps({**meta, "verified": _signature(st)}))


# ---------------------------------------------------------------- writing entries

def write_entry(entry: Path, images: np.ndarray,
                info: dict) -> tuple[np.ndarray, list[int], list[str]]:
    """Write an entry crash-safely (see the module docstring) and map it; `info` holds n, kept,
    bad and sources. Until the new meta.json exists, the entry reads as absent."""
    images = np.ascontiguousarray(images)
    data_path, meta_path = entry / "images.npy", entry / "meta.json"
    try:
        entry.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(entry)
        meta_path.unlink(missing_ok=True)
        offset = _write_array(entry, images)
        arr = {"shape": list(images.shape), "dtype": images.dtype.name, "nbytes": images.nbytes,
               "chunk_bytes": CHUNK_BYTES, "crc32": _chunk_crcs(images)}
        meta = {"version": CACHE_VERSION, **info, "array": arr,
                "verified": _signature(data_path.stat())}
        atomic_write_text(meta_path, json.dumps(meta))
        fsync_dir(entry)
    except OSError as err:  # read-only, full or a file in the way: the images are decoded
        warn(f"data.cache_dir: cannot write the decoded-image cache {entry} "
             f"({(err.strerror or str(err)).lower()}); using the images decoded in memory "
             "(decoded again next time)")
        return images, info["kept"], info["sources"]
    mapped = np.memmap(data_path, dtype=images.dtype, mode="r", offset=offset,
                       shape=images.shape)
    return mapped, info["kept"], info["sources"]


def _write_array(entry: Path, images: np.ndarray) -> int:
    """images.npy via a temp file, fsynced before the rename; returns the data offset."""
    tmp = entry / f".images~{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, images, allow_pickle=False)
            offset = f.tell() - images.nbytes
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry / "images.npy")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(entry)
    return offset


def _chunk_crcs(images: np.ndarray) -> list[int]:
    data = memoryview(images.reshape(-1)).cast("B")
    return [zlib.crc32(data[i:i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES)]


def _remove_dead_temps(entry: Path) -> None:
    """Temp files of decodes killed on this host (a live process may still be writing its own)."""
    host = socket.gethostname()
    for tmp in entry.glob(".images~*.tmp"):
        parts = tmp.name.split("~")
        if len(parts) == 4 and parts[1] == host and parts[2].isdigit() \
                and not _pid_alive(int(parts[2])):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


# ---------------------------------------------------------------- decoding

def _decode(job: tuple[Path, Preprocess, bool, int]) -> np.ndarray | str:
    path, prep, skip_bad, max_pixels = job
    try:
        return _decode_one(path, prep, max_pixels)
    except ReslabError as err:
        if skip_bad:
            return str(err)
        raise


def _decode_one(path: Path, prep: Preprocess, max_pixels: int) -> np.ndarray:
    from .imageio import is_out_of_memory, read_image

    try:
        return prep.apply(read_image(path, max_pixels), path)
    except (MemoryError, RuntimeError) as err:  # resizing a large image (read_image has its own)
        if not is_out_of_memory(err):
            raise
        raise ReslabError(f"cannot read image {path}: out of memory preprocessing it (lower "
                          "data.max_pixels to refuse images this large)") from None


def _stored(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    from .imageio import to_float01

    return to_float01(arr.transpose(1, 2, 0)).transpose(2, 0, 1).astype(np.float16)


def _decode_all(files, prep, skip_bad, workers, progress, max_pixels=DEFAULT_MAX_PIXELS):
    workers = workers or min(available_cores(), 8)
    jobs = [(f, prep, skip_bad, max_pixels) for f in files]
    out, kept, bad, sources = None, [], [], set()
    pool = (ProcessPoolExecutor(workers, initializer=_worker_init,
                                initargs=(_worker_allowance(max_pixels),))
            if workers > 1 and len(files) > 256 else None)
    try:
        results = pool.map(_decode, jobs, chunksize=64) if pool else map(_decode, jobs)
        for i, arr in enumerate(track(results, total=len(files), description="decoding",
                                      enabled=progress)):
            if isinstance(arr, str):
                bad.append(arr)
                continue
            sources.add(arr.dtype.name)
            source, arr = arr.dtype, _stored(arr)
            if out is None:
                out = np.empty((len(files), *arr.shape), arr.dtype)
                first, first_source = files[i], source
            elif arr.shape != out.shape[1:] or arr.dtype != out.dtype:
                raise ReslabError(_mismatch((first, first_source), out, (files[i], source), arr))
            out[len(kept)] = arr
            kept.append(i)
    except BrokenProcessPool:
        raise ReslabError("a decoding worker process died (killed for memory? a crashing "
                          "decoder?); set data.workers: 1 to decode in one process and see "
                          "which file") from None
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    _report_bad(bad)
    if out is None:
        raise ReslabError("no readable images: every file failed to decode")
    return out[: len(kept)], kept, bad, sorted(sources)


def _report_bad(bad: list[str]) -> None:
    """The skipped files, on every run that uses them (a cached entry too), not only the first."""
    if not bad:
        return
    warn(f"skipped {len(bad)} unreadable file(s):\n  " + "\n  ".join(bad))


def _mismatch(first_file: tuple[Path, np.dtype], out: np.ndarray,
              this_file: tuple[Path, np.dtype], arr: np.ndarray) -> str:
    """What differs, in the files' own sample types (a uint16 TIFF is cached as float16)."""
    (first, first_source), (path, source) = first_file, this_file
    if arr.dtype != out.dtype:
        return (f"mixed bit depths: {first} is {first_source}, {path} is {source}; convert the "
                "tree to one format with `reslab convert`")
    return (f"images differ in size: {first} is {out.shape[2]}x{out.shape[3]}, {path} is "
            f"{arr.shape[1]}x{arr.shape[2]}; set data.image_size (and/or data.center_crop)")


def _worker_allowance(max_pixels: int) -> int:
    return DECODE_BYTES_PER_PIXEL * max_pixels + (1 << 30)


def _worker_init(allowance: int | None = None) -> None:
    # Decoding processes run side by side: one intra-op thread each, as DataLoader workers do.
    torch.set_num_threads(1)
    if allowance:
        limit_address_space(allowance)


def limit_address_space(allowance: int) -> bool:
    """Cap this process's address space at its current size plus `allowance` bytes (Linux), so
    an allocation beyond it raises MemoryError here instead of exhausting the machine.
    Returns whether a limit was set."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + allowance
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft != resource.RLIM_INFINITY and soft <= limit:
            return False  # already tighter
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        return True
    except (ImportError, OSError, ValueError):  # not Linux: the pixel limit still applies
        return False
