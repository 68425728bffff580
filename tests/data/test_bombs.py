"""Decompression bombs: every decoder refuses an image over the pixel limit from its header,
before decoding; `train` and `convert` stop with one line (exit 2) and never allocate it."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from reslab.config import DataConfig, load_config
from reslab.data import cache, imageio, load_data
from reslab.data.convert import convert_tree
from reslab.data.imageio import DEFAULT_MAX_PIXELS, image_size, read_image, write_image
from reslab.errors import ReslabError

H, W = 30, 40  # 1,200 pixels


def png_bomb(width: int, height: int, bit_depth: int = 8, level: int = 9) -> bytes:
    """A valid grayscale PNG of zeros: the compressed rows are ~1000x smaller than decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = bytes(1 + width * bit_depth // 8)  # filter byte + samples
    z = zlib.compressobj(level)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    files = {"png8": (12000, 12000, 8, 9), "png16": (20000, 20000, 16, 1)}
    out = {}
    for name, (w, h, depth, level) in files.items():
        out[name] = root / f"{name}.png"
        out[name].write_bytes(png_bomb(w, h, depth, level))
    return out


def test_config_default_is_the_readers_default_and_the_key_is_validated():
    assert DataConfig().max_pixels == DEFAULT_MAX_PIXELS
    with pytest.raises(ReslabError, match="max_pixels"):
        load_config({"data": {"max_pixels": 0}})


def test_real_png_bombs_are_refused_from_the_header(bombs):
    assert bombs["png8"].stat().st_size < 200_000 and bombs["png16"].stat().st_size < 4_000_000
    with pytest.raises(ReslabError) as info:
        read_image(bombs["png8"])
    message = str(info.value)
    assert str(bombs["png8"]) in message and "\n" not in message
    assert "12000x12000 = 144,000,000 pixels" in message
    assert "limit of 90,000,000 (data.max_pixels" in message
    with pytest.raises(ReslabError, match="20000x20000 = 400,000,000 pixels"):
        read_image(bombs["png16"])
    assert image_size(bombs["png16"]) == (20000, 20000)  # the header is still readable


def _small(kind: str, path: Path) -> Path:
    """A real 40x30 image of each decoder's kind."""
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if kind == "tiff8":
        tifffile.imwrite(path, rgb8, photometric="rgb")
    elif kind in ("png8", "jpeg"):
        write_image(path, rgb8)
    elif kind in ("png16", "tiff16"):
        write_image(path, rgb8.astype(np.uint16) * 257)
    else:
        write_image(path, rgb8.astype(np.float32) / 255)  # float TIFF, EXR
    return path


DECODERS = {"png8": ("x.png", "_read_pil"), "jpeg": ("x.jpg", "jpeg"),
            "png16": ("x16.png", "_read_png16"), "tiff8": ("x.tif", "tiff"),
            "tiff16": ("x16.tiff", "tiff"), "tiff32f": ("xf.tiff", "tiff"),
            "exr": ("x.exr", "exr")}


@pytest.mark.parametrize("kind", DECODERS)
def test_every_decoder_checks_the_limit_before_decoding(kind, tmp_path, monkeypatch):
    name, decoder = DECODERS[kind]
    path = _small(kind if kind != "tiff32f" else "float", tmp_path / name)
    assert read_image(path, max_pixels=1200).shape == (H, W, 3)  # at the limit: read

    def must_not_decode(*args):
        raise AssertionError(f"{kind}: decoded an image over the limit")

    if decoder.startswith("_"):
        monkeypatch.setattr(imageio, decoder, must_not_decode)
    else:
        monkeypatch.setitem(imageio._READERS, decoder, must_not_decode)
    with pytest.raises(ReslabError) as info:
        read_image(path, max_pixels=1199, limit_key="--max-pixels")
    assert f"{path}: 40x30 = 1,200 pixels is over the limit of 1,199 (--max-pixels" \
        in str(info.value)


def test_jpeg_size_comes_from_the_frame_header(tmp_path):
    path = _small("jpeg", tmp_path / "a.jpg")
    data = bytearray(path.read_bytes())
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 50000)  # a header-only bomb
    path.write_bytes(bytes(data))
    assert image_size(path) == (60000, 50000)
    with pytest.raises(ReslabError, match="50000x60000 = 3,000,000,000 pixels is over"):
        read_image(path)


def test_a_limit_above_pillows_own_is_honoured(tmp_path, monkeypatch):
    """Pillow's process-wide bomb limit must not refuse what data.max_pixels allows."""
    path = _small("png8", tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would refuse above 200
    assert read_image(path, max_pixels=10_000).shape == (H, W, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # lifted only while that image was read


def test_train_refuses_a_bomb_in_one_line(bombs, make_tree, tmp_path, cli):
    root = make_tree(per_class=3)
    (root / "a" / "huge.png").write_bytes(bombs["png8"].read_bytes())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{source: folder, root: {root}, cache_dir: {tmp_path / 'c'}}}\n"
                   "train: {epochs: 1, device: cpu, progress: false, tensorboard: false, "
                   "report: false}\n")
    code, _, err = cli("train", cfg, "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("reslab train: error: ") and "huge.png" in err
    assert "data.max_pixels" in err and "12000x12000" in err
    assert not (tmp_path / "run" / "best.pt").exists()


def test_convert_checks_every_header_before_writing_anything(bombs, tmp_path, cli):
    src = tmp_path / "src"
    write_image(src / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    (src / "b").mkdir()
    (src / "b" / "zz.png").write_bytes(bombs["png16"].read_bytes())
    code, _, err = cli("convert", src, tmp_path / "dst", "--to", "linear-tiff")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "zz.png" in err and "20000x20000" in err and "--max-pixels" in err
    assert not (tmp_path / "dst").exists()  # refused before the first (good) file was written
    with pytest.raises(ReslabError, match="limit of 100 .--max-pixels"):
        convert_tree(src, tmp_path / "dst", "linear-tiff", progress=False, max_pixels=100)
    (src / "b" / "zz.png").unlink()
    assert convert_tree(src, tmp_path / "dst", "linear-tiff", progress=False,
                        max_pixels=16) == 1  # 4x4: at the limit


def test_decoding_workers_apply_the_limit(make_tree, tmp_path):
    root = make_tree(per_class=130, size=8)  # 390 files: decoded by a process pool
    _small("png8", root / "b" / "big.png")
    cfg = load_config({"data": {"source": "folder", "root": str(root), "workers": 2,
                                "max_pixels": 1000, "cache_dir": str(tmp_path / "c")}}).data
    with pytest.raises(ReslabError, match=r"big\.png: 40x30 = 1,200 pixels .*data\.max_pixels"):
        load_data(cfg, progress=False)


def _address_space_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0]


def _allocate(n: int) -> str:
    try:
        np.ones(n, np.uint8)
    except MemoryError:
        return "MemoryError"
    return "allocated"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux's")
def test_decoding_workers_cap_their_address_space():
    allowance = cache._worker_allowance(1000)  # 64 KB of pixels + 1 GiB
    with ProcessPoolExecutor(1, initializer=cache._worker_init, initargs=(allowance,)) as pool:
        assert pool.submit(_address_space_limit).result() != -1  # RLIM_INFINITY is -1
        assert pool.submit(_allocate, 1 << 20).result() == "allocated"
        assert pool.submit(_allocate, 3 << 30).result() == "MemoryError"


def test_out_of_memory_while_decoding_is_one_line_naming_the_file(make_tree, monkeypatch):
    root = make_tree(per_class=1)

    def exhausted(*args):
        raise MemoryError()

    monkeypatch.setattr(imageio, "_read_pil", exhausted)
    with pytest.raises(ReslabError, match=r"0\.png: out of memory decoding this PNG"):
        cache._decode((root / "a" / "0.png", cache.Preprocess(), False, DEFAULT_MAX_PIXELS))
    kept = cache._decode((root / "a" / "0.png", cache.Preprocess(), True, DEFAULT_MAX_PIXELS))
    assert "out of memory" in kept  # skip_bad lists it with the other unreadable files


CAPPED = """
import resource, sys
from reslab.cli import main
import reslab.api, reslab.cli.train, reslab.data.convert  # noqa: F401 (before the cap)
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (768 << 20), resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux's")
def test_bombs_are_refused_without_allocating_them(bombs, make_tree, tmp_path):
    """Under a 768 MB address-space allowance (decoding the 16-bit bomb takes 2.4 GB), both
    commands refuse it with one line; with the limit raised the same run runs out of memory,
    so it is the header check that keeps the image from being decoded."""
    root = make_tree(per_class=2)
    (root / "b" / "zz.png").write_bytes(bombs["png16"].read_bytes())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{source: folder, root: {root}, cache_dir: {tmp_path / 'c'}}}\n"
                   "train: {epochs: 1, device: cpu, progress: false}\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CAPPED, *args], capture_output=True,
                              text=True, timeout=300)

    for args in (["convert", str(root), str(tmp_path / "dst"), "--to", "srgb-png"],
                 ["train", str(cfg), "--out", str(tmp_path / "run")]):
        done = run(*args)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "zz.png: 20000x20000 = 400,000,000 pixels is over the limit" in done.stderr
    control = run("train", str(cfg), "--out", str(tmp_path / "run2"),
                  "--set", "data.max_pixels=500000000")
    assert control.returncode == 2 and "over the limit" not in control.stderr
    assert "zz.png: out of memory decoding this PNG" in control.stderr.splitlines()[-1]
