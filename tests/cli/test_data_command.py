"""`reslab data CONFIG`: the dataset overview on digits, class folders and CIFAR-10 pickles."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import yaml
from PIL import Image

from reslab.data import load_data
from reslab.data.overview import (
    AUGMENTED_COPIES,
    AUGMENTED_ROWS,
    GAP,
    SAMPLES_PER_CLASS,
    TILE_MIN,
)

DIGITS = {"data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.15,
                   "augment": "crop-flip", "pad": 1},
          "train": {"progress": False}}


def write_config(path, cfg: dict):
    path.write_text(yaml.safe_dump(cfg))
    return path


def grid_side(tiles: int, tile: int) -> int:
    """Pixels along one side of `tiles` tiles GAP apart, enlarged to at least TILE_MIN."""
    return (tiles * (tile + GAP) - GAP) * math.ceil(TILE_MIN / tile)


def table_rows(out: str, classes: list[str]) -> dict[str, list[int]]:
    """The printed table's rows: class (or 'total') -> its numbers."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in [*classes, "total"] and all(c.isdigit() for c in cells[1:]):
            rows[cells[0]] = [int(c) for c in cells[1:]]
    return rows


def assert_picture(path, height: int, grid_width: int) -> np.ndarray:
    """A PNG `height` pixels high whose grid (right of the class names) is `grid_width` wide;
    not blank: dark and bright pixels, and more than a few distinct values."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] == height
    assert grid_width < pixels.shape[1] <= grid_width + 120  # + the class-name margin
    grid = pixels[:, -grid_width:]
    assert grid.min() < 30 and grid.max() > 220 and len(np.unique(grid)) > 10
    return pixels


def test_digits_counts_sum_to_1797_and_both_grids_are_drawn(tmp_path, cli):
    cfg = write_config(tmp_path / "digits.yaml", DIGITS)
    code, out, err = cli("data", cfg, "--out", tmp_path / "ov")
    assert code == 0, err
    rows = table_rows(out, [str(i) for i in range(10)])
    assert len(rows) == 11 and rows["total"][-1] == 1797
    assert sum(r[-1] for name, r in rows.items() if name != "total") == 1797
    # the splits training uses: the same seeded, stratified split as load_data
    from reslab.config import load_config

    data = load_data(load_config(cfg).data)
    assert [rows[str(i)][0] for i in range(10)] == np.bincount(data.train.labels).tolist()
    assert "1x8x8 uint8" in out and "crop-flip" in out
    ov = tmp_path / "ov"
    summary = json.loads((ov / "data.json").read_text())
    assert summary["images"] == 1797 and summary["stored"]["channels"] == 1
    assert summary["train_mean"][0] == pytest.approx(data.mean[0], abs=1e-9)
    assert_picture(ov / "samples.png", grid_side(10, 8), grid_side(SAMPLES_PER_CLASS, 8))
    assert_picture(ov / "augmented.png", grid_side(AUGMENTED_ROWS, 8),
                   grid_side(1 + AUGMENTED_COPIES, 8))
    assert "| total | 1259 | 269 | 269 | 1797 |" in (ov / "data.md").read_text()
    html = (ov / "report.html").read_text()
    assert html.count("<img") == 2 and "Images per class and split" in html


def test_folder_tree_reports_sizes_formats_and_bit_depth(tmp_path, make_tree, cli):
    root = make_tree(classes=("a", "b", "c"), per_class=6, size=16)
    Image.fromarray(np.full((12, 20, 3), 200, np.uint8)).save(root / "a" / "wide.png")
    cfg = write_config(tmp_path / "tree.yaml", {
        "data": {"source": "folder", "root": str(root), "image_size": 16, "val_fraction": 0.2},
        "train": {"progress": False}})
    code, out, err = cli("data", cfg, "--out", tmp_path / "ov")
    assert code == 0, err
    assert "16x16 (18), 20x12 (1)" in out  # file sizes, width x height
    assert "PNG 8-bit (19)" in out and "3x16x16 uint8" in out
    rows = table_rows(out, ["a", "b", "c"])
    assert rows["a"][-1] == 7 and rows["total"][-1] == 19
    summary = json.loads((tmp_path / "ov" / "data.json").read_text())
    assert summary["files"]["formats"] == [{"format": "PNG", "bit_depth": "8-bit", "files": 19}]
    assert summary["files"]["sampled"] == {"headers": 19, "decoded": 19, "of": 19}
    # 16-pixel tiles, 3 classes: the grids are drawn at the tree's stored size
    assert_picture(tmp_path / "ov" / "samples.png", grid_side(3, 16),
                   grid_side(SAMPLES_PER_CLASS, 16))


def test_16_bit_tiff_tree_reports_its_bit_depth(tmp_path, make_tree, cli):
    from reslab.data.convert import convert_tree

    tree = tmp_path / "linear"
    convert_tree(make_tree(per_class=4, size=12), tree, "linear-tiff")
    cfg = write_config(tmp_path / "tiff.yaml", {
        "data": {"source": "folder", "root": str(tree), "augment": "flip"},
        "train": {"progress": False}})
    code, out, err = cli("data", cfg, "--out", tmp_path / "ov")
    assert code == 0, err
    assert "TIFF 16-bit (12)" in out and "(linear)" in out


def fake_cifar(root, n_train=20, n_test=10):
    """CIFAR-10's python batches (the files torchvision reads), random pixels."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_train
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": [i % 10 for i in range(n)]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"]}, f)


def test_cifar10_pickles_without_downloading(tmp_path, monkeypatch, cli):
    import torchvision.datasets.cifar as tv_cifar

    fake_cifar(tmp_path / "cifar")
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "download", lambda self: pytest.fail("downloaded"))
    cfg = write_config(tmp_path / "c.yaml", {
        "data": {"source": "cifar10", "root": str(tmp_path / "cifar"), "download": True,
                 "val_fraction": 0.2},
        "train": {"progress": False}})
    code, out, err = cli("data", cfg, "--out", tmp_path / "ov")
    assert code == 0, err
    rows = table_rows(out, ["airplane", "truck"])
    assert rows["airplane"] == [8, 2, 1, 11] and rows["total"] == [80, 20, 10, 110]
    assert "CIFAR-10 python pickles 8-bit (110)" in out and "32x32 (110)" in out
    assert (tmp_path / "ov" / "samples.png").is_file()


def test_out_must_not_be_a_users_folder(tmp_path, cli):
    cfg = write_config(tmp_path / "digits.yaml", DIGITS)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    code, _, err = cli("data", cfg, "--out", tmp_path / "mine")
    assert code == 2 and "not made by reslab" in err and len(err.strip().splitlines()) == 1


@pytest.mark.shared
def test_shared_cifar10_jpeg_folder(tmp_path, cifar_train, cli):
    cfg = write_config(tmp_path / "c.yaml", {
        "data": {"source": "folder", "root": str(cifar_train), "max_per_class": 20},
        "train": {"progress": False}})
    code, out, err = cli("data", cfg, "--out", tmp_path / "ov")
    assert code == 0, err
    assert table_rows(out, ["airplane", "truck"])["total"][-1] == 200
    assert "32x32 (200)" in out and "JPEG 8-bit (24)" in out and "3x32x32 uint8" in out


def test_data_example_writes_a_tree_training_reads_and_a_rerun_is_a_no_op(tmp_path, cli,
                                                                        monkeypatch):
    """`reslab data example DIR`: without ../shared, the digits as 64x64 RGB JPEGs in class
    folders (20 each); the same command again leaves them; another kind there is refused."""
    from reslab.data.imageio import read_image
    from reslab.data.sources import scan_class_tree

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")          # ../shared does not exist here
    code, out, err = cli("data", "example", "data/photos")
    assert code == 0, err
    assert out == ("example data: 200 images in 10 classes from the bundled digits -> "
                   "data/photos (64x64 RGB JPG)\n")
    tree = scan_class_tree(tmp_path / "project" / "data" / "photos")
    assert list(tree) == [str(i) for i in range(10)] and {len(v) for v in tree.values()} == {20}
    assert read_image(tree["3"][0]).shape == (64, 64, 3)
    before = {p: p.stat().st_mtime_ns for p in tree["3"]}
    assert cli("data", "example", "data/photos")[1].endswith("left as it is\n")
    assert {p: p.stat().st_mtime_ns for p in tree["3"]} == before
    code, out, err = cli("data", "example", "data/photos", "--kind", "cifar10-subset")
    assert code == 2 and err == ("reslab data: error: data/photos exists and is not an empty "
                                 "folder: choose a new DIR\n")
    code, _, err = cli("data", "example")
    assert code == 2 and err == ("reslab data: error: reslab data example DIR: the folder to "
                                 "write is missing\n")
