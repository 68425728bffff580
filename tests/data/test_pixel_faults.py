"""Pixels a loader must not pass on silently (issue 22 items 6, 9, 10): NaN/inf in float
images, a uint16 TIFF named by its own dtype, skip_bad warning once through reslab's channel,
a class name with a newline kept on one line."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from reslab.config import load_config
from reslab.data import load_data
from reslab.data.imageio import write_image
from reslab.errors import ReslabError


def float_tree(root: Path, ext: str = ".exr", per_class: int = 6, dtype=np.float16) -> Path:
    rng = np.random.default_rng(0)
    for ci, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = (rng.random((8, 8, 3)) * 0.5 + ci * 0.5).astype(dtype)
            write_image(root / name / f"{i}{ext}", img)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def folder_config(tmp_path: Path, root: Path, **data) -> Path:
    cfg = {"data": {"source": "folder", "root": str(root), "val_fraction": 0.2,
                    "augment": "none", "cache_dir": str(tmp_path / "cache"), **data},
           "model": {"arch": "resnet20", "width": 4},
           "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "progress": False,
                     "tensorboard": False, "report": False}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_nan_pixels_in_an_exr_are_one_line_naming_the_file(tmp_path, cli):
    root = float_tree(tmp_path / "tree")
    bad = root / "a" / "3.exr"
    img = np.full((8, 8, 3), 0.25, np.float16)
    img[2, 3, 1], img[4, 4, 0] = np.nan, np.inf
    write_image(bad, img)
    config = folder_config(tmp_path, root)
    before = snapshot(tmp_path)
    code, out, err = cli("train", config, "--out", tmp_path / "run")
    assert code == 2
    assert err == (f"reslab train: error: cannot read image {bad}: 1 NaN, 1 inf pixel value(s) "
                   "of 192 (float16); fix the file, or set data.nonfinite: clamp (NaN -> 0, "
                   "the rest clamped to +-65504)\n")
    assert "diverged" not in out and "lower train.lr" not in out
    assert not (tmp_path / "run").exists()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("cache")} == \
        {k: v for k, v in before.items() if not k.startswith("cache")}


def test_a_float_tiff_with_values_beyond_float16_is_refused(tmp_path):
    root = float_tree(tmp_path / "tree", ext=".tif", dtype=np.float32)
    img = np.full((8, 8, 3), 0.25, np.float32)
    img[0, 0, 0] = 1e6  # would become inf in the float16 cache
    write_image(root / "b" / "0.tif", img)
    cfg = load_config(folder_config(tmp_path, root)).data
    with pytest.raises(ReslabError) as err:
        load_data(cfg, progress=False)
    assert str(err.value) == (f"cannot read image {root / 'b' / '0.tif'}: 1 beyond +-65504 pixel "
                              "value(s) of 192 (float32); fix the file, or set data.nonfinite: "
                              "clamp (NaN -> 0, the rest clamped to +-65504)")


def test_nonfinite_clamp_replaces_them(tmp_path):
    root = float_tree(tmp_path / "tree")
    img = np.full((8, 8, 3), 0.25, np.float16)
    img[0, 0] = [np.nan, np.inf, -np.inf]
    write_image(root / "a" / "0.exr", img)
    data = load_data(load_config(folder_config(tmp_path, root, nonfinite="clamp")).data,
                     progress=False)
    images = np.concatenate([s.images.float().numpy() for s in (data.train, data.val)])
    assert np.isfinite(images).all()
    assert {0.0, 65504.0, -65504.0} <= set(np.unique(images).tolist())


def test_a_uint16_tiff_is_named_by_its_own_dtype(tmp_path):
    root = tmp_path / "tree"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            write_image(root / name / f"{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    write_image(root / "b" / "9.tif", np.full((8, 8, 3), 4000, np.uint16))
    with pytest.raises(ReslabError) as err:
        load_data(load_config(folder_config(tmp_path, root)).data, progress=False)
    assert str(err.value) == (f"mixed bit depths: {root / 'a' / '0.png'} is uint8, "
                              f"{root / 'b' / '9.tif'} is uint16; convert the tree to one "
                              "format with `reslab convert`")


def test_skip_bad_warns_once_through_reslabs_channel(tmp_path, make_tree, capsys):
    root = make_tree(per_class=4)
    (root / "a" / "broken.jpg").write_text("not an image")
    cfg = load_config(folder_config(tmp_path, root, skip_bad=True)).data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any Python warning (with its source line) fails
        load_data(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("skipped 1 unreadable") == 1 and "broken.jpg" in err
    assert "cache.py" not in err and "UserWarning" not in err


def test_a_class_name_with_a_newline_stays_on_one_line(tmp_path, cli):
    root = tmp_path / "tree"
    for name in ("good", "bad\nname"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            write_image(root / name / f"{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    write_image(root / "bad\nname" / "9.tif", np.full((8, 8, 3), 4000, np.uint16))
    code, _, err = cli("train", folder_config(tmp_path, root), "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1
    assert "bad\\nname" in err and "is uint16" in err


def test_one_class_in_a_train_val_layout_is_one_line_before_training(tmp_path, cli):
    root = tmp_path / "layout"
    for split in ("train", "val"):
        (root / split / "only").mkdir(parents=True)
        for i in range(3):
            write_image(root / split / "only" / f"{i}.png", np.full((8, 8, 3), 9 * i, np.uint8))
    config = folder_config(tmp_path, root)
    code, out, err = cli("train", config, "--out", tmp_path / "run")
    assert code == 2 and "Epoch" not in out
    assert err == (f"reslab train: error: data.root: {root / 'train'} has 1 class folder; "
                   "expected at least 2\n")
    assert not (tmp_path / "run").exists()
