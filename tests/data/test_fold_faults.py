"""Folds too small for their classes (issue 22 item 8): each fold's missing classes are named
in one warning line, an empty validation fold is an error, and the summary's accuracy
intervals stay inside [0, 1]."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from reslab.config import DataConfig
from reslab.data import assign_splits
from reslab.errors import ReslabError
from reslab.stats import metric_bounds, summarize, summarize_metrics


def test_folds_5_with_3_images_per_class_warn_per_fold_and_keep_intervals_in_range(
        tmp_path, cli, make_tree):
    root = make_tree(classes=tuple("abcdefghij"), per_class=3, size=8)
    cfg = {"data": {"source": "folder", "root": str(root), "augment": "none",
                    "cache_dir": str(tmp_path / "cache")},
           "model": {"arch": "resnet20", "width": 4},
           "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False,
                     "tensorboard": False, "report": False, "threads": 1}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "folds"
    code, _, err = cli("train", path, "--folds", 5, "--out", out, "--quiet")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "validation split lacks" in line]
    # 30 images dealt into 5 folds of 6: every fold's 6 images cover 6 of the 10 classes.
    assert warnings == [f"reslab train: warning: data.folds = 5: fold {i}'s validation split "
                        "lacks 4 of 10 classes (it has 6 images); its accuracy covers the "
                        "other classes only (use fewer folds or more images per class)"
                        for i in range(5)]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("best_val_acc", "final_val_acc"):
        assert 0.0 <= summary[key]["ci95_low"] <= summary[key]["ci95_high"] <= 1.0
    for key in ("params", "seconds_per_epoch"):
        assert key in summary  # unbounded metrics keep their plain t-interval


def test_a_fold_with_no_validation_image_is_an_error():
    labels = np.repeat(np.arange(2), 2)  # 4 images, 5 folds: fold 4 gets none
    with pytest.raises(ReslabError) as err:
        assign_splits(labels, None, DataConfig(folds=5, fold=4))
    assert str(err.value) == ("data.folds = 5: fold 4 has no validation images (only 4 "
                              "non-test images); use fewer folds")


def test_accuracy_intervals_are_clipped_to_the_unit_interval():
    # Two folds at 0.0 and 0.1: the t-interval is 0.05 +- 0.64.
    raw = summarize([0.0, 0.1])
    assert raw["ci95_low"] < 0 < 1 < raw["ci95_high"] + 0.5
    clipped = summarize([0.0, 0.1], metric_bounds("test_acc"))
    assert clipped["ci95_low"] == 0.0 and clipped["ci95_high"] == raw["ci95_high"]
    near_one = summarize_metrics([{"val_acc": 1.0}, {"val_acc": 0.9}])["val_acc"]
    assert near_one["ci95_high"] == 1.0 and near_one["ci95_low"] < 0.95
    loss = summarize_metrics([{"val_loss": 0.0}, {"val_loss": 0.1}])["val_loss"]
    assert loss["ci95_low"] == 0.0
    assert metric_bounds("seconds_per_epoch") is None and metric_bounds("params") is None
