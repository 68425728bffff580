"""reslab.data.convert and `reslab convert`: encodings round-trip, layout kept, safe refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reslab.cli import main
from reslab.data.convert import convert_tree
from reslab.data.imageio import read_image, write_image
from reslab.errors import ReslabError


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def srgb_tree(tmp_path) -> Path:
    """Two classes of 8-bit images (every code value 0..255 appears), plus non-image clutter."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for cls in ("cat", "dog"):
        for i in range(3):
            arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            arr.reshape(-1)[:256] = np.arange(256)
            write_image(src / cls / f"{i}.png", arr)
    write_image(src / "dog" / "photo.JPG", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (src / "notes.txt").write_text("not an image")
    (src / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    return src


def assert_trees_close(a: Path, b: Path, ext: str, atol: int) -> None:
    """Every image under a has a counterpart (same stem, `ext`) under b within atol codes."""
    for name in files_under(a):
        if name.endswith(".txt") or Path(name).name.startswith("."):
            continue
        want = read_image(a / name).astype(np.int64)
        got = read_image(b / Path(name).with_suffix(ext)).astype(np.int64)
        assert np.abs(got - want).max() <= atol, name


def test_srgb_to_linear_tiff_and_back_within_one_code(srgb_tree, tmp_path):
    lin, back = tmp_path / "lin", tmp_path / "back"
    assert convert_tree(srgb_tree, lin, "linear-tiff", progress=False) == 7
    assert files_under(lin) == {"cat/0.tiff", "cat/1.tiff", "cat/2.tiff", "dog/0.tiff",
                                "dog/1.tiff", "dog/2.tiff", "dog/photo.tiff"}
    sample = read_image(lin / "cat" / "0.tiff")
    assert sample.dtype == np.uint16
    # sRGB 128/255 is linear 0.2158: the TIFF must hold linear values, not rescaled sRGB.
    assert read_image(srgb_tree / "cat" / "0.png").reshape(-1)[128] == 128
    assert sample.reshape(-1)[128] == round(0.21586 * 65535)
    assert convert_tree(lin, back, "srgb-png", progress=False) == 7
    assert read_image(back / "cat" / "0.png").dtype == np.uint8
    assert_trees_close(srgb_tree, back, ".png", atol=1)


def test_log_exr_roundtrips_to_srgb_and_linear(srgb_tree, tmp_path):
    log, back, lin, lin2 = (tmp_path / n for n in ("log", "back", "lin", "lin2"))
    convert_tree(srgb_tree, log, "log-exr", progress=False)
    exr = read_image(log / "dog" / "1.exr")
    assert exr.dtype == np.float32 and exr.min() == pytest.approx(np.log(1e-4))
    convert_tree(log, back, "srgb-png", progress=False)
    assert_trees_close(srgb_tree, back, ".png", atol=1)
    convert_tree(srgb_tree, lin, "linear-tiff", progress=False)
    convert_tree(log, lin2, "linear-tiff", progress=False)
    assert_trees_close(lin, lin2, ".tiff", atol=1)


def test_16bit_png_source_is_read_as_linear(tmp_path):
    arr = (np.arange(48).reshape(4, 4, 3) * 1365).astype(np.uint16)
    write_image(tmp_path / "src" / "a" / "x.png", arr)
    convert_tree(tmp_path / "src", tmp_path / "out", "linear-tiff", progress=False)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "a" / "x.tiff"), arr)


def test_refuses_non_empty_destination_without_force(srgb_tree, tmp_path):
    dst = tmp_path / "dst"
    convert_tree(srgb_tree, dst, "srgb-png", progress=False)
    with pytest.raises(ReslabError, match="--force") as info:
        convert_tree(srgb_tree, dst, "srgb-png", progress=False)
    assert str(dst) in str(info.value)
    assert convert_tree(srgb_tree, dst, "srgb-png", force=True, progress=False) == 7


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(ReslabError, match="nowhere"):
        convert_tree(tmp_path / "nowhere", tmp_path / "out", "srgb-png", progress=False)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(ReslabError, match="no images"):
        convert_tree(tmp_path / "empty", tmp_path / "out", "srgb-png", progress=False)


def test_two_sources_with_one_output_name_are_refused_before_writing(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    write_image(tmp_path / "src" / "a.png", img)
    write_image(tmp_path / "src" / "a.jpg", img)
    with pytest.raises(ReslabError, match="both"):
        convert_tree(tmp_path / "src", tmp_path / "out", "log-exr", progress=False)
    assert not (tmp_path / "out").exists()


def test_destination_inside_source_is_refused(srgb_tree):
    with pytest.raises(ReslabError, match="contain"):
        convert_tree(srgb_tree, srgb_tree / "converted", "srgb-png", progress=False)


def test_cli_convert_success_then_refusal(srgb_tree, tmp_path, capsys):
    dst = tmp_path / "cli"
    assert main(["convert", str(srgb_tree), str(dst), "--to", "linear-tiff"]) == 0
    out = capsys.readouterr().out
    assert f"converted 7 images to linear-tiff in {dst}" in out
    assert main(["convert", str(srgb_tree), str(dst), "--to", "linear-tiff"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--force" in err
    assert main(["convert", str(srgb_tree), str(dst), "--to", "linear-tiff", "--force"]) == 0


def test_cli_reports_a_corrupt_image_in_one_line(tmp_path, capsys):
    (tmp_path / "src" / "cls").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "src" / "cls" / "ok.png")
    (tmp_path / "src" / "cls" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--to",
                 "srgb-png"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.jpg" in err
