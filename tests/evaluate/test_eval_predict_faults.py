"""eval and predict against what the model was trained on (issue 22, second probe): the
training resolution stored in the checkpoint (eval: an error; predict: converted with one
warning line), and `predict --out` never replacing a run's file, an input or a user's file."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from tests.conftest import _fast_config

    out = tmp_path_factory.mktemp("trained") / "run"
    train(_fast_config(train={"epochs": 1}), out=out, quiet=True)  # digits: 8x8 grey
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def image_tree(root: Path, size: int, mode: str = "L", classes=("0", "1")) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(3):
            value = 40 * i + 5
            pixels = (np.full((size, size), value, np.uint8) if mode == "L" else  # colour:
                      np.dstack([np.full((size, size), value + c * 30, np.uint8)
                                 for c in range(3)]))
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_the_training_resolution_is_stored_in_the_checkpoint(run):
    norm = torch.load(run / "best.pt", weights_only=True)["norm"]
    assert norm["size"] == [8, 8]


def test_eval_on_images_of_another_resolution_is_refused(run, cli, tmp_path):
    tree = image_tree(tmp_path / "big", 16)
    before = snapshot(run)
    code, out, err = cli("eval", run, "--data-root", tree)
    assert code == 2 and out == ""
    assert err == (f"reslab eval: error: {tree}: images are 16x16, the model was trained at "
                   "8x8; its accuracy would not be the model's (set data.image_size / "
                   "data.center_crop in the run's config, or evaluate images of the training "
                   "size)\n")
    assert snapshot(run) == before


def test_predict_converts_size_and_channels_with_one_line_each(run, cli, tmp_path):
    photos = image_tree(tmp_path / "photos", 32, mode="RGB", classes=("x",))
    code, _, err = cli("predict", run, photos, "--out", tmp_path / "p.csv")
    assert code == 0, err
    assert err.splitlines() == [
        f"reslab predict: warning: {photos}: images are 32x32, the model was trained at 8x8: "
        "resized to 8x8 (antialiased bilinear) for prediction",
        f"reslab predict: warning: {photos}: images have 3 channel(s), the model takes 1: "
        "converted (RGB to grey by luma)"]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("target", ["best.pt", "config.yaml", "result.json"])
def test_predict_out_never_replaces_a_runs_file(run, cli, tmp_path, target):
    images = image_tree(tmp_path / "imgs", 8)
    before = snapshot(run)
    code, _, err = cli("predict", run, images, "--out", run / target)
    assert code == 2 and err == (f"reslab predict: error: --out {(run / target).resolve()}: a "
                                 f"file of the run {run.resolve()}; predictions never replace "
                                 "a run's files (choose another file)\n")
    assert snapshot(run) == before


def test_predict_out_never_replaces_an_input_image(run, cli, tmp_path):
    images = image_tree(tmp_path / "imgs", 8)
    target = images / "0" / "1.png"
    before = snapshot(images)
    for given in (images, target):
        code, _, err = cli("predict", run, given, "--out", target)
        assert code == 2 and err == (f"reslab predict: error: --out {target.resolve()}: one of "
                                     "the input images; choose another file\n")
    assert snapshot(images) == before


def test_predict_out_replaces_only_an_earlier_predictions_csv(run, cli, tmp_path):
    images = image_tree(tmp_path / "imgs", 8)
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,data\n")
    code, _, err = cli("predict", run, images, "--out", notes)
    assert code == 2 and err.count("\n") == 1 and "is not a predictions CSV" in err
    assert notes.read_text() == "my,own,data\n"
    out = tmp_path / "p.csv"
    assert cli("predict", run, images, "--out", out)[0] == 0
    assert cli("predict", run, images, "--out", out)[0] == 0  # its own earlier output: replaced


def test_eval_refuses_a_data_folder_that_now_splits_differently(tmp_path, cli, make_tree):
    root = make_tree(classes=("a", "b"), per_class=10, size=8)
    cfg = {"data": {"source": "folder", "root": str(root), "val_fraction": 0.2,
                    "test_fraction": 0.2, "augment": "none", "cache_dir": str(tmp_path / "c")},
           "model": {"arch": "resnet20", "width": 4},
           "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False,
                     "tensorboard": False, "report": False}}
    run = tmp_path / "run"
    train(cfg, out=run, quiet=True)
    assert torch.load(run / "best.pt", weights_only=True)["norm"]["split"]["n"] == [12, 4, 4]
    assert cli("eval", run)[0] == 0  # the same tree: the same split
    shutil.copy(root / "a" / "0.png", root / "a" / "10.png")  # one image added
    before = snapshot(run)
    code, _, err = cli("eval", run)
    assert code == 2 and err == (
        f"reslab eval: error: {run}: the data no longer splits as it did in training (train/"
        "val/test 13/4/4 now, 12/4/4 then: images were added, removed, renamed or relabelled "
        "under data.root, or a data.* key changed); its test split would not be the one the "
        "run was scored on\n")
    assert snapshot(run) == before
    # Resuming it (to train longer) would go on from the new split: refused the same way.
    code, _, err = cli("train", "--resume", run, "--set", "train.epochs=2")
    assert code == 2 and err.startswith(f"reslab train: error: {run}: the data no longer "
                                        "splits as it did in training (train/val/test 13/4/4")
    assert err.count("\n") == 1 and snapshot(run) == before
