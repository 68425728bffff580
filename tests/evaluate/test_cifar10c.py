"""`reslab robustness RUN --cifar10c DIR [--baseline RUN]`: the released CIFAR-10-C layout
(labels.npy, <corruption>.npy with 5 severities of n images stacked) read, accuracy per
corruption and severity, CE and mCE as documented (Hendrycks & Dietterich)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from reslab import train
from reslab.config import load_config
from reslab.data import load_data
from reslab.evaluate.cifar10c import corruption_errors, mean_corruption_error
from reslab.utils import read_csv

CORRUPTIONS = ("gaussian_noise", "fog", "saturate")   # two of the benchmark's, one extra
# Severity s labels the same images with the class SHIFTS[s - 1] further on, so that each
# severity has its own accuracy (a slicing error between severities changes the numbers).
SHIFTS = (0, 1, 2, 1, 0)


@pytest.fixture(scope="module")
def runs_and_arrays(tmp_path_factory):
    """Two tiny runs on a 3-class tree, and a CIFAR-10-C folder whose every severity holds the
    runs' test images, labelled per severity as SHIFTS says (so that both runs make errors;
    the expected accuracies follow from each run's predictions.npz)."""
    root = tmp_path_factory.mktemp("c10c")
    tree = write_tree(root / "tree")
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        cfg = {"data": {"source": "folder", "root": str(tree), "augment": "none",
                        "val_fraction": 0.2, "test_fraction": 0.3},
               "model": {"arch": "resnet20", "width": 4},
               "train": {"epochs": 1, "batch_size": 16, "seed": seed, "tensorboard": False,
                         "report": False, "device": "cpu", "progress": False}}
        train(cfg, out=root / name, quiet=True)
        runs[name] = root / name
    test = load_data(load_config(runs["a"] / "config.yaml").data, False).test
    images = test.images.numpy().transpose(0, 2, 3, 1)
    labels = [(test.labels.numpy() + shift) % 3 for shift in SHIFTS]  # one array a severity
    folder = root / "CIFAR-10-C"
    folder.mkdir()
    np.save(folder / "labels.npy", np.concatenate(labels))
    for name in CORRUPTIONS:
        np.save(folder / f"{name}.npy", np.concatenate([images] * 5))
    return runs, folder, labels


def write_tree(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, name in enumerate(("a", "b", "c")):
        (root / name).mkdir(parents=True)
        for i in range(20):
            img = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
            img[..., ci] = np.clip(img[..., ci].astype(int) + 60, 0, 255)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def expected_accuracy(run, labels):
    pred = np.load(run / "predictions.npz")["pred"]
    return float((pred == labels).mean())


def expected_error(run, labels) -> float:
    """A corruption's error averaged over its severities."""
    return float(np.mean([1 - expected_accuracy(run, s) for s in labels]))


@pytest.mark.parametrize("name", ["a", "b"])
def test_accuracy_per_corruption_and_severity_and_unnormalised_mce(runs_and_arrays, cli, name,
                                                                  tmp_path):
    runs, folder, labels = runs_and_arrays
    run = shutil.copytree(runs[name], tmp_path / name)  # run b stays a baseline never written
    code, out, err = cli("robustness", run, "--cifar10c", folder)
    assert code == 0, err
    rows = read_csv(run / "cifar10c.csv")
    assert [(r["corruption"], int(r["severity"])) for r in rows] == \
        [(c, s) for c in CORRUPTIONS for s in range(1, 6)]
    for r in rows:
        accuracy = expected_accuracy(run, labels[int(r["severity"]) - 1])
        assert float(r["accuracy"]) == pytest.approx(accuracy)
        assert float(r["error"]) == pytest.approx(1 - accuracy)
    # Unnormalised: mean error over severities, averaged over the benchmark's corruptions only.
    error = expected_error(run, labels)
    assert f"mCE {error:.4f} (unnormalised)" in out
    md = (run / "cifar10c.md").read_text()
    assert "| saturate (extra) |" in md and f"**{error:.4f}**" in md


def test_mce_relative_to_a_baseline_run(runs_and_arrays, cli):
    runs, folder, labels = runs_and_arrays
    code, out, err = cli("robustness", runs["a"], "--cifar10c", folder, "--baseline", runs["b"])
    assert code == 0, err
    err_a, err_b = expected_error(runs["a"], labels), expected_error(runs["b"], labels)
    if err_b == 0:
        pytest.skip("the baseline made no error on these images")
    assert f"mCE {err_a / err_b:.4f} (relative to {runs['b']})" in out
    assert not (runs["b"] / "cifar10c.csv").exists()  # the baseline run is only read


def test_ce_and_mce_as_documented():
    rows = [{"corruption": c, "severity": s, "error": e, "accuracy": 1 - e}
            for c, errs in (("fog", [0.1, 0.2, 0.3, 0.4, 0.5]),
                            ("saturate", [0.9] * 5),
                            ("contrast", [0.2] * 5))
            for s, e in enumerate(errs, start=1)]
    base = [{**r, "error": r["error"] * 2} for r in rows]
    assert corruption_errors(rows) == pytest.approx({"fog": 0.3, "saturate": 0.9,
                                                     "contrast": 0.2})
    assert mean_corruption_error(corruption_errors(rows)) == pytest.approx(0.25)  # no extra
    assert mean_corruption_error(corruption_errors(rows, base)) == pytest.approx(0.5)


def test_layout_errors_are_one_line(runs_and_arrays, cli, tmp_path):
    runs, _, _ = runs_and_arrays
    code, _, err = cli("robustness", runs["a"], "--cifar10c", tmp_path)
    assert code == 2 and err == f"reslab robustness: error: --cifar10c {tmp_path}: no labels.npy\n"
    np.save(tmp_path / "labels.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "fog.npy", np.zeros((7, 16, 16, 3), np.uint8))
    code, _, err = cli("robustness", runs["a"], "--cifar10c", tmp_path)
    assert code == 2 and err == (f"reslab robustness: error: {tmp_path / 'fog.npy'}: uint8 "
                                 "(7, 16, 16, 3); expected uint8 (10, H, W, 3) like "
                                 "labels.npy's 10 rows\n")
    code, _, err = cli("robustness", runs["a"], "--baseline", runs["b"])
    assert code == 2 and err == "reslab robustness: error: --baseline goes with --cifar10c DIR\n"
