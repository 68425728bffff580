"""k-fold: data.folds / data.fold split the non-test images into stratified, seeded folds, and
`reslab train CONFIG --folds K` trains one run per fold with a summary in the parent."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reslab.config import DataConfig, load_config
from reslab.data import assign_splits, load_data
from reslab.data.sources import load_digits_listing
from reslab.errors import ReslabError

LABELS = load_digits_listing().labels


def fold_splits(folds=3, test_fraction=0.2, seed=0, split=None, labels=LABELS, **keys):
    return [assign_splits(labels, split, DataConfig(folds=folds, fold=i, split_seed=seed,
                                                    test_fraction=test_fraction, **keys))
            for i in range(folds)]


def test_folds_partition_the_non_test_images_and_are_stratified():
    splits = fold_splits(folds=3)
    test = [np.flatnonzero(s == 2) for s in splits]
    assert all(np.array_equal(t, test[0]) for t in test)  # one fixed test set for every fold
    assert abs(len(test[0]) - 0.2 * len(LABELS)) <= len(np.unique(LABELS))
    vals = [np.flatnonzero(s == 1) for s in splits]
    pooled = np.sort(np.concatenate(vals))
    assert np.array_equal(pooled, np.flatnonzero(splits[0] != 2))  # a partition: no gaps...
    assert len(pooled) == len(np.unique(pooled))                     # ...and no overlaps
    for s, v in zip(splits, vals):  # fold i is val, every other non-test image trains
        assert np.array_equal(np.flatnonzero(s == 0), np.setdiff1d(pooled, v))
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1
    for c in np.unique(LABELS):  # each class split evenly over the folds
        per_fold = [int(np.sum(LABELS[v] == c)) for v in vals]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)


def test_folds_follow_split_seed_and_ignore_val_fraction():
    a, b = fold_splits(seed=0), fold_splits(seed=0, val_fraction=0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = fold_splits(seed=1)
    assert not np.array_equal(a[0], c[0])


def test_a_source_test_split_is_kept_and_its_val_split_pooled_into_the_folds():
    labels = np.repeat(np.arange(4), 30)
    split = np.zeros(len(labels), np.int8)
    split[::5], split[1::5] = 2, 1  # the source's own test and val images
    splits = fold_splits(folds=4, test_fraction=0.5, split=split, labels=labels)
    for s in splits:
        assert np.array_equal(s == 2, split == 2)  # test_fraction unused: the source has one
    vals = np.concatenate([np.flatnonzero(s == 1) for s in splits])
    assert np.array_equal(np.sort(vals), np.flatnonzero(split != 2))


@pytest.mark.parametrize("data, message", [
    ({"folds": 3, "fold": 3}, "data.fold = 3: expected 0 <= fold < data.folds (3)"),
    ({"fold": 0}, "data.fold = 0: expected 0 <= fold < data.folds (None)"),
    ({"folds": 1}, "data.folds = 1"),
    ({"folds": 3, "fold": -1}, "data.fold = -1"),
])
def test_bad_fold_keys_are_one_line_errors(data, message):
    with pytest.raises(ReslabError) as err:
        load_config({"data": data})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_folds_without_a_fold_is_not_one_run():
    with pytest.raises(ReslabError, match="data.folds = 3 without data.fold"):
        load_data(DataConfig(folds=3, max_per_class=10), progress=False)


def test_train_folds_writes_one_run_per_fold_and_a_summary(cli, fast_config, tmp_path):
    import yaml

    cfg = fast_config(data={"max_per_class": 30, "test_fraction": 0.2}, train={"epochs": 1})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "folds"
    code, stdout, err = cli("train", path, "--folds", 3, "--out", out, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("fold-*")) == ["fold-0", "fold-1", "fold-2"]
    vals = []
    for i in range(3):
        run_cfg = load_config(out / f"fold-{i}" / "config.yaml")
        assert (run_cfg.data.folds, run_cfg.data.fold) == (3, i)
        data = load_data(run_cfg.data, progress=False)
        vals.append(len(data.val))
        assert len(data.test) == 60 and len(data.train) + len(data.val) == 240
    assert sum(vals) == 240  # the three validation folds cover every non-test image once
    summary = json.loads((out / "summary.json").read_text())
    results = [json.loads((out / f"fold-{i}" / "result.json").read_text()) for i in range(3)]
    assert summary["best_val_acc"]["values"] == [r["best_val_acc"] for r in results]
    assert summary["best_val_acc"]["n"] == 3
    plan = load_config(out / "repeats.yaml")
    assert (plan.data.folds, plan.data.fold) == (3, None)
