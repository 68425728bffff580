"""`data.source: csv` (a labels file naming images under a root) and `npz` (arrays): the same
images and seed train the same run as a class-folder tree; their errors are one line."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from reslab import train
from reslab.config import load_config
from reslab.data import load_data

PER_CLASS = 30


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """The first PER_CLASS digits of each class as grey PNGs in class folders, the same images
    as RGB arrays in the folder listing's order, and the CSV rows (shuffled)."""
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    rows, arrays, labels = [], [], []
    for c in range(10):
        (root / "tree" / str(c)).mkdir(parents=True)
        for i, k in enumerate(np.flatnonzero(digits.target == c)[:PER_CLASS]):
            Image.fromarray(images[k]).save(root / "tree" / str(c) / f"{i}.png")
            rows.append({"file": f"{c}/{i}.png", "digit": str(c)})
            arrays.append(np.repeat(images[k][:, :, None], 3, axis=2))
            labels.append(c)
    np.savez(root / "digits.npz", x=np.stack(arrays), y=np.asarray(labels))
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    write_csv(root / "tree" / "labels.csv", ["file", "digit"], shuffled)
    return root


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)


def data_of(root, source):
    return {"folder": {"source": "folder", "root": str(root / "tree")},
            "csv": {"source": "csv", "root": str(root / "tree"), "labels": "labels.csv",
                    "columns": {"path": "file", "label": "digit"}},
            "npz": {"source": "npz", "root": str(root / "digits.npz")}}[source]


def test_csv_and_npz_train_the_same_run_as_the_folder(digits_files, fast_config, tmp_path):
    results = {}
    for source in ("folder", "csv", "npz"):
        cfg = fast_config(data=data_of(digits_files, source), train={"epochs": 1})
        results[source] = train(cfg, out=tmp_path / source, quiet=True)
    for key in ("best_val_acc", "test_acc", "final_val_acc"):
        assert results["csv"][key] == results["folder"][key] == results["npz"][key], key
    assert (tmp_path / "csv" / "classes.json").read_text() == \
        (tmp_path / "folder" / "classes.json").read_text()


def test_csv_lists_the_folder_order_and_splits(digits_files, tmp_path):
    folder = load_data(load_config({"data": data_of(digits_files, "folder")}).data, False)
    by_csv = load_data(load_config({"data": data_of(digits_files, "csv")}).data, False)
    assert by_csv.classes == folder.classes == [str(c) for c in range(10)]
    assert by_csv.train.paths == folder.train.paths
    assert by_csv.val.labels.tolist() == folder.val.labels.tolist()


def test_csv_split_column_gives_the_splits(digits_files, tmp_path):
    rows = [{"path": f"{c}/{i}.png", "label": str(c), "split": "val" if i < 3 else "train"}
            for c in range(10) for i in range(PER_CLASS)]
    write_csv(tmp_path / "split.csv", ["path", "label", "split"], rows)
    cfg = load_config({"data": {"source": "csv", "root": str(digits_files / "tree"),
                                "labels": str(tmp_path / "split.csv")}})
    data = load_data(cfg.data, False)
    assert (len(data.train), len(data.val), data.test) == (270, 30, None)


def test_npz_split_and_class_names(tmp_path):
    x = np.zeros((6, 4, 4), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1, 0, 1]),
             split=np.array(["train"] * 4 + ["test"] * 2), classes=np.array(["cat", "dog"]))
    data = load_data(load_config({"data": {"source": "npz", "root": str(tmp_path / "d.npz"),
                                           "val_fraction": 0}}).data, False)
    assert data.classes == ["cat", "dog"]
    assert (len(data.train), len(data.test), data.in_chans) == (4, 2, 1)


def errors_of(cli, tmp_path, data: dict) -> str:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": data}))
    code, out, err = cli("data", tmp_path / "c.yaml", "--out", tmp_path / "overview")
    assert code == 2 and err.count("\n") == 1, err
    return err.removeprefix("reslab data: error: ").strip()


def test_csv_errors_are_one_line(cli, tmp_path, digits_files):
    tree = digits_files / "tree"
    assert errors_of(cli, tmp_path, {"source": "csv", "root": str(tree), "labels": "no.csv"}) \
        == f"data.labels: {tree / 'no.csv'} not found"
    write_csv(tmp_path / "out.csv", ["path", "label"],
              [{"path": "0/0.png", "label": "0"}, {"path": "../digits.npz", "label": "1"}])
    assert errors_of(cli, tmp_path, {"source": "csv", "root": str(tree),
                                     "labels": str(tmp_path / "out.csv")}) \
        == f"{tmp_path / 'out.csv'} line 3: ../digits.npz is outside data.root {tree}"
    write_csv(tmp_path / "gone.csv", ["path", "label"],
              [{"path": "0/0.png", "label": "0"}, {"path": "1/999.png", "label": "1"}])
    assert errors_of(cli, tmp_path, {"source": "csv", "root": str(tree),
                                     "labels": str(tmp_path / "gone.csv")}) \
        == f"{tmp_path / 'gone.csv'} line 3: image {tree / '1' / '999.png'} not found"
    write_csv(tmp_path / "unknown.csv", ["path", "label", "split"],
              [{"path": "0/0.png", "label": "0", "split": "train"},
               {"path": "1/0.png", "label": "1", "split": "train"},
               {"path": "2/0.png", "label": "2", "split": "val"}])
    assert errors_of(cli, tmp_path, {"source": "csv", "root": str(tree),
                                     "labels": str(tmp_path / "unknown.csv")}) \
        == (f"{tmp_path / 'unknown.csv'} line 4: unknown label '2' in 'label' (the classes are "
            "the train rows' labels: 0, 1)")
    write_csv(tmp_path / "cols.csv", ["file", "label"], [{"file": "0/0.png", "label": "0"}])
    assert errors_of(cli, tmp_path, {"source": "csv", "root": str(tree),
                                     "labels": str(tmp_path / "cols.csv")}) \
        == (f"{tmp_path / 'cols.csv'}: no column 'path' (header: file, label; set "
            "data.columns.path / .label)")


def test_npz_errors_are_one_line(cli, tmp_path):
    assert errors_of(cli, tmp_path, {"source": "npz", "root": str(tmp_path / "no.npz")}) \
        == f"data.root: {tmp_path / 'no.npz'} not found (source npz: a .npz file)"
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 5]),
             classes=np.array(["a", "b"]))
    assert errors_of(cli, tmp_path, {"source": "npz", "root": str(tmp_path / "bad.npz")}) \
        == (f"{tmp_path / 'bad.npz'}: unknown label 5 in y (expected 0..1, one per class of "
            "'classes')")
    np.savez(tmp_path / "nox.npz", images=np.zeros((3, 4, 4), np.uint8), y=np.arange(3))
    assert errors_of(cli, tmp_path, {"source": "npz", "root": str(tmp_path / "nox.npz")}) \
        == f"{tmp_path / 'nox.npz'}: no array 'x' (arrays: images, y; set data.arrays.x / .y)"


def test_labels_only_with_csv(cli, tmp_path):
    assert errors_of(cli, tmp_path, {"source": "folder", "root": str(tmp_path),
                                     "labels": "x.csv"}) \
        == (f"{tmp_path / 'c.yaml'}: data: data.labels (a CSV file) goes with data.source: "
            "csv, and only with it")


def test_data_overview_of_csv_and_npz(cli, tmp_path, digits_files):
    for source in ("csv", "npz"):
        path = tmp_path / f"{source}.yaml"
        path.write_text(yaml.safe_dump({"data": data_of(digits_files, source)}))
        code, _, err = cli("data", path, "--out", tmp_path / source)
        assert code == 0, err
        summary = json.loads((tmp_path / source / "data.json").read_text())
        assert summary["source"] == source and summary["images"] == 10 * PER_CLASS
        assert summary["classes"] == [str(c) for c in range(10)]
