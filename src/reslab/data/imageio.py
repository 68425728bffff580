"""Image I/O that keeps bit depth: 8-bit JPEG/PNG/TIFF, 16-bit PNG/TIFF, float TIFF and EXR.

Every reader returns HWC, 3 channels in RGB order, with the stored dtype and values (uint8,
uint16, float16 or float32). Pillow is used only for 8-bit data because it cannot hold more than
8 bits per RGB channel; 16-bit PNG goes through torchvision, TIFF > 8 bit through tifffile, EXR
through OpenEXR. Anything unreadable raises ReslabError with a one-line message naming the file.

Decompression bombs: a few hundred KB of compressed zeros can declare a 20000x20000 image that
decodes to gigabytes. Every reader first takes the size from the file header (PNG IHDR, JPEG
frame header, TIFF tags, EXR data window) and refuses an image over `max_pixels` (width x
height; default DEFAULT_MAX_PIXELS, `data.max_pixels` in a config) before any pixel is decoded.

Also here: the sRGB <-> linear transfer functions and the log encoding used for EXR files, each
working on numpy arrays and torch tensors alike.
"""
from __future__ import annotations

import importlib
import os
import struct
import sys
import threading
import uuid
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ReslabError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".exr"})

# About Pillow's own default (89.5 Mpixel): a 90 Mpixel RGB image decodes to 270 MB, and the
# float copies of preprocessing take ~30-50 bytes per pixel. The default of data.max_pixels
# (config.py repeats the number; a test keeps the two equal).
DEFAULT_MAX_PIXELS = 90_000_000

# Added before taking the log of linear values so black stays finite: ln(1e-4) = -9.21.
# 1e-4 sits below the first 8-bit sRGB step (1/255/12.92 = 3.0e-4 linear), so 8-bit shadows keep
# distinct log values, while the log range stays small enough for float16 EXR to hold it.
LOG_EPS = 1e-4

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    _PNG_MAGIC: "png",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
    b"v/1\x01": "exr",
}


def _error(path: str | os.PathLike, reason: str) -> ReslabError:
    reason = " ".join(str(reason).split())  # library messages may span lines; ours must not
    return ReslabError(f"cannot read image {path}: {reason}")


def _sniff(path: Path) -> str:
    """Return 'jpeg' / 'png' / 'tiff' / 'exr' from the file's first bytes (not its name)."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        expected = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise _error(path, f"unsupported extension '{path.suffix}' (expected one of {expected})")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as err:
        raise _error(path, err.strerror or err) from None
    if size == 0:
        raise _error(path, "file is empty (0 bytes)")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    raise _error(path, "not a valid JPEG/PNG/TIFF/EXR image")


def _png_header(path: Path) -> tuple[int, int, int]:
    """(height, width, bit depth) from the PNG IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise _error(path, "corrupt PNG (no IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width, head[24]


# Start-of-frame markers (baseline, progressive, lossless, arithmetic...); C4, C8 and CC share
# the range but are other segments.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


def _jpeg_size(path: Path) -> tuple[int, int]:
    """(height, width) from the JPEG frame header: markers are walked, no pixel is decoded."""
    with open(path, "rb") as f:
        f.read(2)  # SOI, checked by _sniff
        while True:
            byte = f.read(1)
            if byte != b"\xff":
                raise _error(path, "corrupt JPEG (bad segment marker)" if byte else
                             "truncated JPEG (no frame header)")
            marker = f.read(1)
            while marker == b"\xff":  # fill bytes
                marker = f.read(1)
            if not marker or marker[0] in (0xD9, 0xDA):  # EOI / start of scan before a frame
                raise _error(path, "corrupt JPEG (no frame header)")
            if marker[0] in _JPEG_STANDALONE:
                continue
            field = f.read(2)
            length = struct.unpack(">H", field)[0] if len(field) == 2 else 0
            if length < 2:  # also keeps a zero length from looping on the same marker
                raise _error(path, "corrupt JPEG (truncated header)")
            if marker[0] in _JPEG_SOF:
                body = f.read(5)  # precision, height, width
                if len(body) < 5:
                    raise _error(path, "corrupt JPEG (truncated frame header)")
                return struct.unpack(">HH", body[1:5])
            f.seek(length - 2, os.SEEK_CUR)


def _header_size(path: Path, kind: str) -> tuple[int, int, int]:
    """(height, width, depth) from the header; depth > 1 only for volumetric TIFF."""
    if kind == "png":
        return _png_header(path)[:2] + (1,)
    if kind == "jpeg":
        return (*_jpeg_size(path), 1)
    if kind == "tiff":
        tifffile = hdr_module("tifffile")

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return page.imagelength, page.imagewidth, max(1, page.imagedepth)
    OpenEXR = hdr_module("OpenEXR")

    lo, hi = OpenEXR.File(str(path), header_only=True).header()["dataWindow"]
    return int(hi[1] - lo[1] + 1), int(hi[0] - lo[0] + 1), 1


def _check_pixels(path: Path, kind: str, max_pixels: int, limit_key: str) -> int:
    """Refuse an image over the pixel limit from its header alone; returns its pixel count."""
    height, width, depth = _header_size(path, kind)
    pixels = height * width * depth
    if pixels > max_pixels:
        size = f"{width}x{height}" + (f"x{depth}" if depth > 1 else "")
        raise _error(path, f"{size} = {pixels:,} pixels is over the limit of {max_pixels:,} "
                     f"({limit_key}; a decompression bomb? raise {limit_key} if the image is "
                     "genuine)")
    return pixels


_PIL_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pil_allowing(pixels: int) -> Iterator[None]:
    """Pillow has its own bomb check, a process-wide limit (89.5 Mpixel by default) that warns
    above it and refuses above twice it. Our limit was checked from the header already, so
    lift Pillow's for an image that max_pixels allows (and only then, and only while it opens)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or pixels <= limit:
        yield
        return
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """HW / HWC with 1-4 channels -> HWC RGB: gray is repeated, alpha dropped."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise _error(path, f"unsupported image shape {arr.shape} (expected gray, RGB or RGBA)")
    if arr.shape[2] <= 2:  # gray or gray + alpha
        return np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _read_pil(path: Path, pixels: int = 0) -> np.ndarray:
    with _pil_allowing(pixels), Image.open(path) as img:
        img.load()
        if img.mode in ("I", "F") or img.mode.startswith("I;"):  # Pillow would clip these
            raise _error(path, f"unsupported high-bit-depth mode {img.mode}")
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def _read_png16(path: Path) -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_png

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders (for TorchCodec, not a dependency here).
        warnings.simplefilter("ignore", DeprecationWarning)
        chw = decode_png(data, ImageReadMode.UNCHANGED)
    return _to_rgb(chw.permute(1, 2, 0).numpy(), path)


def _read_tiff(path: Path, pixels: int = 0) -> np.ndarray:
    tifffile = hdr_module("tifffile")

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if page.dtype == np.uint8 or page.bitspersample < 8:
            # Pillow handles palette/CMYK/JPEG-in-TIFF 8-bit variants.
            return _read_pil(path, pixels)
        if page.photometric not in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.MINISBLACK):
            raise _error(path, f"unsupported TIFF photometric {page.photometric.name} above 8 bit")
        arr = page.asarray()
        if page.axes.startswith("S"):  # planar (separate) storage: samples come first
            arr = np.moveaxis(arr, 0, -1)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # the pipeline holds float16/float32 only
    if arr.dtype not in (np.uint16, np.float16, np.float32):
        raise _error(path, f"unsupported TIFF sample type {arr.dtype} (expected uint8, uint16, "
                     "float16 or float32)")
    return _to_rgb(arr, path)


def _read_exr(path: Path, pixels: int = 0) -> np.ndarray:
    OpenEXR = hdr_module("OpenEXR")

    channels = OpenEXR.File(str(path)).channels()
    name = next((n for n in ("RGB", "RGBA", "Y") if n in channels), None)
    if name is None:
        raise _error(path, f"EXR has channels {sorted(channels)}, expected R, G, B or Y")
    pixels = channels[name].pixels
    if pixels.dtype not in (np.float16, np.float32):
        raise _error(path, f"unsupported EXR pixel type {pixels.dtype} (expected half or float)")
    return _to_rgb(pixels, path)


_READERS = {"jpeg": _read_pil, "tiff": _read_tiff, "exr": _read_exr}


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
               limit_key: str = "data.max_pixels") -> np.ndarray:
    """Decode an image to HWC RGB, keeping the stored dtype and values (no scaling).

    An image over `max_pixels` (width x height, from the header) is refused before decoding;
    `limit_key` is the setting the error message names."""
    path = Path(path)
    kind = _sniff(path)
    try:
        pixels = _check_pixels(path, kind, max_pixels, limit_key)
        if kind == "png":
            return _read_png16(path) if _png_header(path)[2] == 16 else _read_pil(path, pixels)
        return _READERS[kind](path, pixels)
    except ReslabError:
        raise
    except Exception as err:  # decoders raise anything (OSError, SyntaxError, RuntimeError...)
        if is_out_of_memory(err):
            raise _error(path, f"out of memory decoding this {kind.upper()} (lower {limit_key} "
                         "to refuse images this large)") from None
        raise _error(path, f"corrupt or unsupported {kind.upper()} file ({err})") from err


def is_out_of_memory(err: BaseException) -> bool:
    """A failed allocation: numpy/Pillow raise MemoryError, torch a RuntimeError."""
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError)
                                            and "can't allocate memory" in str(err))


def check_pixels(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                 limit_key: str = "data.max_pixels") -> int:
    """The image's pixel count from its header; ReslabError when it is over `max_pixels`
    (the message names `limit_key`) or the header cannot be read."""
    path = Path(path)
    kind = _sniff(path)
    try:
        return _check_pixels(path, kind, max_pixels, limit_key)
    except ReslabError:
        raise
    except Exception as err:
        raise _error(path, f"corrupt or unsupported {kind.upper()} file ({err})") from err


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    path = Path(path)
    kind = _sniff(path)
    try:
        return _header_size(path, kind)[:2]
    except ReslabError:
        raise
    except Exception as err:
        raise _error(path, f"corrupt or unsupported {kind.upper()} file ({err})") from err


def bit_depth_scale(dtype: Any) -> float:
    """The value that means 'full white': 255 for uint8, 65535 for uint16, 1.0 for floats."""
    name = str(dtype).removeprefix("torch.") if _is_torch_dtype(dtype) else np.dtype(dtype).name
    scales = {"uint8": 255.0, "uint16": 65535.0}
    if name in scales:
        return scales[name]
    if name in ("float16", "float32", "float64", "bfloat16"):
        return 1.0
    raise ValueError(f"no bit-depth scale for dtype {dtype}")


def _is_torch_dtype(dtype: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(dtype, torch.dtype)


def to_float01(arr: np.ndarray) -> np.ndarray:
    """float32 image: integers divided by their dtype's maximum, floats kept as stored."""
    return np.asarray(arr, dtype=np.float32) / np.float32(bit_depth_scale(arr.dtype))


# ---------------------------------------------------------------- writing

@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` (same suffix, for libraries that look at it); rename
    it over `path` on success so readers never see a half-written image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _png16_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint16 HW/HWC array as PNG: Pillow cannot write 16-bit RGB, torchvision's
    encode_png takes uint8 only, and the format is small enough to write directly."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    height, width, chans = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[chans]
    rows = arr.astype(">u2").view(np.uint8).reshape(height, width * chans * 2)
    # Filter 1 ("Sub": byte minus the byte one pixel left) shrinks smooth 16-bit data a lot.
    bpp = chans * 2
    sub = rows.copy()
    sub[:, bpp:] -= rows[:, :-bpp]
    raw = np.hstack([np.ones((height, 1), np.uint8), sub]).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (_PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def _write_exr(tmp: Path, arr: np.ndarray) -> None:
    OpenEXR = hdr_module("OpenEXR")

    name = {2: "Y", 3: "RGB", 4: "RGBA"}[arr.ndim if arr.ndim == 2 else arr.shape[2]]
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {name: np.ascontiguousarray(arr)}).write(str(tmp))


_WRITE_DTYPES = {
    ".png": ("uint8", "uint16"), ".jpg": ("uint8",), ".jpeg": ("uint8",),
    ".tif": ("uint8", "uint16", "float16", "float32"), ".tiff": ("uint8", "uint16", "float16",
                                                                 "float32"),
    ".exr": ("float16", "float32"),
}


def write_image(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write an HW or HWC (RGB/RGBA) image losslessly (JPEG: quality 95), format by extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_DTYPES:
        raise ReslabError(f"cannot write image {path}: unsupported extension '{path.suffix}'")
    if arr.dtype.name not in _WRITE_DTYPES[ext] or arr.ndim not in (2, 3):
        raise ReslabError(f"cannot write image {path}: {ext} holds {'/'.join(_WRITE_DTYPES[ext])} "
                          f"HW or HWC data, got {arr.dtype} {arr.shape}")
    with _atomic_target(path) as tmp:
        if ext == ".exr":
            _write_exr(tmp, arr)
        elif ext in (".tif", ".tiff"):
            tifffile = hdr_module("tifffile")

            rgb = arr.ndim == 3 and arr.shape[2] in (3, 4)
            tifffile.imwrite(tmp, arr, photometric="rgb" if rgb else "minisblack",
                             compression="zlib")
        elif arr.dtype == np.uint16:
            tmp.write_bytes(_png16_bytes(arr))
        else:
            img = Image.fromarray(arr.squeeze(2) if arr.ndim == 3 and arr.shape[2] == 1 else arr)
            img.save(tmp, format="PNG" if ext == ".png" else "JPEG", quality=95)


# ---------------------------------------------------------------- transfer functions

def _is_torch(x: Any) -> bool:
    # Checking sys.modules avoids importing torch (seconds) just to learn x is not a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _prepare(x: Any) -> tuple[Any, Any]:
    """Return (x clamped to >= 0 as float, where-function) for numpy or torch input."""
    if _is_torch(x):
        import torch

        x = x if x.is_floating_point() else x.float()
        return x.clamp(min=0), torch.where
    x = np.asarray(x)
    x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
    return np.maximum(x, 0), np.where


def _finish(y: Any) -> Any:
    return y[()] if isinstance(y, np.ndarray) and y.ndim == 0 else y  # scalar in, scalar out


def srgb_to_linear(x: Any) -> Any:
    """IEC 61966-2-1 sRGB decoding (display values in [0,1] -> linear light)."""
    x, where = _prepare(x)
    return _finish(where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4))


def linear_to_srgb(x: Any) -> Any:
    """IEC 61966-2-1 sRGB encoding (linear light in [0,1] -> display values)."""
    x, where = _prepare(x)
    return _finish(where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055))


def linear_to_log(x: Any) -> Any:
    """ln(linear + LOG_EPS); negative linear values count as black."""
    x, _ = _prepare(x)
    return _finish((x + LOG_EPS).log() if _is_torch(x) else np.log(x + LOG_EPS))


def log_to_linear(y: Any) -> Any:
    """Inverse of linear_to_log: exp(y) - LOG_EPS, clamped to >= 0."""
    if _is_torch(y):
        y = y if y.is_floating_point() else y.float()
        return (y.exp() - LOG_EPS).clamp(min=0)
    y = np.asarray(y)
    y = y if np.issubdtype(y.dtype, np.floating) else y.astype(np.float32)
    return _finish(np.maximum(np.exp(y) - LOG_EPS, 0))


def hdr_module(name: str):
    """tifffile / OpenEXR, the optional `hdr` extra: a one-line error naming it when missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ReslabError(f"reading or writing {'TIFF' if name == 'tifffile' else 'EXR'} images "
                          f"needs the {name} package: pip install 'reslab[hdr]'") from None
