"""reslab.data.imageio: exact bit-depth-preserving reads/writes, errors, transfer functions."""
from __future__ import annotations

import numpy as np
import OpenEXR
import pytest
import tifffile
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_png

from reslab.data.imageio import (
    IMAGE_EXTENSIONS,
    LOG_EPS,
    bit_depth_scale,
    image_size,
    linear_to_log,
    linear_to_srgb,
    log_to_linear,
    read_image,
    srgb_to_linear,
    to_float01,
    write_image,
)
from reslab.errors import ReslabError

H, W = 4, 5


def gradient16() -> np.ndarray:
    """uint16 RGB with distinct channels, values far above 255."""
    base = np.arange(H * W, dtype=np.int64).reshape(H, W)
    return np.dstack([base * 3000 + 7, base * 1000 + 300, 65535 - base * 50]).astype(np.uint16)


def gradient_float(dtype) -> np.ndarray:
    """Float RGB with distinct channels, negative and above-1 values included."""
    base = np.linspace(-1.5, 3.25, H * W).reshape(H, W)
    return np.dstack([base, base * 0.5 + 0.125, -base + 0.0625]).astype(dtype)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, want)


def test_extensions_are_lowercase_and_complete():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".exr"}


def test_uint16_tiff_written_by_tifffile_reads_exactly(tmp_path):
    want = gradient16()
    tifffile.imwrite(tmp_path / "a.tif", want, photometric="rgb")
    got = read_image(tmp_path / "a.tif")
    assert_same(got, want)
    assert list(got[0, 1]) == [3007, 1300, 65485]  # R, G, B order


def test_planar_uint16_tiff_reads_as_hwc(tmp_path):
    want = gradient16()
    tifffile.imwrite(tmp_path / "p.tif", want.transpose(2, 0, 1), photometric="rgb",
                     planarconfig="separate")
    assert_same(read_image(tmp_path / "p.tif"), want)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float16])
def test_tiff_write_read_roundtrip(tmp_path, dtype):
    want = gradient16() if dtype == np.uint16 else gradient_float(dtype)
    write_image(tmp_path / "b.TIFF", want)  # extension matching is case-insensitive
    assert_same(read_image(tmp_path / "b.TIFF"), want)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.TIFF"), want)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29 decoders
def test_uint16_png_roundtrip_checked_by_independent_decoder(tmp_path):
    want = gradient16()
    write_image(tmp_path / "c.png", want)
    raw = torch.frombuffer(bytearray((tmp_path / "c.png").read_bytes()), dtype=torch.uint8)
    decoded = decode_png(raw, ImageReadMode.UNCHANGED)
    assert decoded.dtype == torch.uint16
    np.testing.assert_array_equal(decoded.permute(1, 2, 0).numpy(), want)
    got = read_image(tmp_path / "c.png")
    assert_same(got, want)
    assert list(got[H - 1, W - 1]) == [19 * 3000 + 7, 19 * 1000 + 300, 65535 - 19 * 50]


def test_uint16_gray_png_expands_to_three_channels(tmp_path):
    gray = gradient16()[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g16.png")  # Pillow can write 16-bit *gray*
    got = read_image(tmp_path / "g16.png")
    assert got.dtype == np.uint16
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], gray)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_exr_roundtrip_exact(tmp_path, dtype):
    want = gradient_float(dtype)
    write_image(tmp_path / "d.exr", want)
    assert_same(read_image(tmp_path / "d.exr"), want)
    np.testing.assert_array_equal(OpenEXR.File(str(tmp_path / "d.exr")).channels()["RGB"].pixels,
                                  want)


def test_exr_written_by_openexr_as_separate_channels(tmp_path):
    want = gradient_float(np.float32)
    channels = {c: np.ascontiguousarray(want[:, :, i]) for i, c in enumerate("RGB")}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(tmp_path / "e.exr"))
    assert_same(read_image(tmp_path / "e.exr"), want)


def test_8bit_gray_png_gives_three_identical_channels(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 11
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    got = read_image(tmp_path / "g.png")
    assert got.dtype == np.uint8 and got.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], gray)


def test_8bit_rgba_png_drops_alpha(tmp_path):
    rgba = np.dstack([np.full((H, W), v, np.uint8) for v in (10, 20, 30, 128)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.shape == (H, W, 3)
    assert list(got[2, 3]) == [10, 20, 30]


def test_8bit_roundtrips_png_tiff_and_jpeg_size(tmp_path):
    want = (gradient16() // 257).astype(np.uint8)
    for name in ("x.png", "x.tif"):
        write_image(tmp_path / name, want)
        assert_same(read_image(tmp_path / name), want)
    write_image(tmp_path / "x.jpg", want)
    assert read_image(tmp_path / "x.jpg").shape == (H, W, 3)


def test_image_size_reads_headers(tmp_path):
    arrays = {"s.png": gradient16(), "s.tiff": gradient16(), "s.exr": gradient_float(np.float16),
              "s.jpg": np.zeros((H, W, 3), np.uint8), "s8.png": np.zeros((H, W, 3), np.uint8)}
    for name, arr in arrays.items():
        write_image(tmp_path / name, arr)
        assert image_size(tmp_path / name) == (H, W), name


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_image(tmp_path / "sub" / "z.exr", gradient_float(np.float32))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["z.exr"]


def test_write_rejects_dtype_the_format_cannot_hold(tmp_path):
    with pytest.raises(ReslabError, match="holds uint8/uint16"):
        write_image(tmp_path / "f.png", gradient_float(np.float32))
    assert not (tmp_path / "f.png").exists()


def _one_line_error_naming(path) -> str:
    with pytest.raises(ReslabError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_empty_file_is_a_clean_error(tmp_path):
    (tmp_path / "3.png").write_bytes(b"")
    assert "(0 bytes)" in _one_line_error_naming(tmp_path / "3.png")


def test_random_bytes_with_jpg_extension_is_a_clean_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    assert "not a valid" in _one_line_error_naming(tmp_path / "a.jpg")


def test_unsupported_extension_is_a_clean_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "unsupported extension" in _one_line_error_naming(tmp_path / "notes.txt")


@pytest.mark.parametrize("name,arr", [("t.png", np.zeros((64, 64, 3), np.uint8)),
                                      ("t16.png", gradient16()),
                                      ("t.tiff", gradient16()),
                                      ("t.exr", gradient_float(np.float32))])
def test_truncated_files_are_clean_errors(tmp_path, name, arr):
    write_image(tmp_path / name, arr)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    _one_line_error_naming(tmp_path / name)


def test_missing_file_is_a_clean_error(tmp_path):
    assert "no such file" in _one_line_error_naming(tmp_path / "gone.png")


def test_bit_depth_scale_and_to_float01():
    assert bit_depth_scale(np.uint8) == 255
    assert bit_depth_scale(np.dtype("uint16")) == 65535
    assert bit_depth_scale(torch.uint8) == 255
    assert bit_depth_scale(np.float16) == 1.0
    out = to_float01(np.array([0, 255], np.uint8))
    assert out.dtype == np.float32 and list(out) == [0.0, 1.0]
    np.testing.assert_allclose(to_float01(np.array([65535, 32768], np.uint16)), [1, 0.50000763])
    floats = np.array([-0.5, 2.0], np.float16)
    np.testing.assert_array_equal(to_float01(floats), [-0.5, 2.0])


def test_srgb_known_values():
    assert srgb_to_linear(0.5) == pytest.approx(0.21404, abs=1e-5)
    assert linear_to_srgb(0.21404) == pytest.approx(0.5, abs=1e-5)
    assert srgb_to_linear(0.04045) == pytest.approx(0.0031308, abs=1e-7)
    assert srgb_to_linear(1.0) == pytest.approx(1.0)
    assert linear_to_srgb(0.0) == 0.0
    assert srgb_to_linear(-0.2) == 0.0  # clamped, not a NaN from a negative power


def test_srgb_roundtrip_and_numpy_torch_agree():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)
    t = torch.from_numpy(x)
    lin_t = srgb_to_linear(t)
    assert isinstance(lin_t, torch.Tensor) and lin_t.dtype == torch.float32
    np.testing.assert_allclose(lin_t.numpy(), srgb_to_linear(x), atol=1e-7)
    np.testing.assert_allclose(linear_to_srgb(t).numpy(), linear_to_srgb(x), atol=1e-7)


def test_log_encoding_roundtrip_numpy_and_torch():
    x = np.array([0.0, 1e-5, 0.01, 0.5, 1.0, 4.0], np.float32)
    y = linear_to_log(x)
    assert y[0] == pytest.approx(np.log(LOG_EPS))
    np.testing.assert_allclose(log_to_linear(y), x, rtol=1e-5, atol=1e-7)
    yt = linear_to_log(torch.from_numpy(x))
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-6)
    np.testing.assert_allclose(log_to_linear(yt).numpy(), log_to_linear(y), rtol=1e-6, atol=1e-8)
    assert log_to_linear(np.float32(-30.0)) == 0.0  # exp(y) < eps clamps to black
