"""What a study shows when only part of it ran: the summary counts the variants that finished
and names the others, a mean of one seed says "n = 1" (no zero-width interval), Table II
states its n (seeds, test images), and the tables' headers are readable (raw keys in the CSV)."""
from __future__ import annotations

import csv

import pytest
import yaml

from reslab.report import write_report
from reslab.runs.rundir import StudyDir
from reslab.studies.study import run_study

BASE = {"data": {"source": "digits", "val_fraction": 0.2, "test_fraction": 0.25,
                 "max_per_class": 16, "augment": "none"},
        "model": {"arch": "resnet20", "width": 4},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "tensorboard": False,
                  "report": False, "device": "cpu", "progress": False, "threads": 1}}
STUDY = {"name": "one-of-two", "base": BASE,
         "axes": {"width": {"w4": {"model.width": 4}, "w8": {"model.width": 8}}},
         "confirm": {"repeats": 1},
         "robustness": {"suite": "seed", "raw": False}}


@pytest.fixture(scope="module")
def one_variant(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-variant")
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    run_study(path, root / "out", scale="full", only=["w4"], quiet=True, log=lambda _: None)
    return StudyDir(root / "out")


def test_summary_counts_the_variants_that_ran_and_names_the_missing(one_variant):
    summary = one_variant.read_summary()
    assert summary.startswith("Study one-of-two (full scale): 1 of 2 variants (width) finished: "
                              "w4; not run or unfinished: w8. Each variant's config is trained "
                              "with 1 seed and evaluated on its test split.")
    assert "Highest mean" not in summary
    assert " (n = 1)." in summary and "±" not in summary


def test_table_ii_states_n_and_one_seed_has_no_interval(one_variant):
    with open(one_variant.table_csv("table2-accuracy"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["w4"]
    row = rows[0]
    assert row["seeds"] == "1" and row["test_acc_ci95_low"] == row["test_acc_ci95_high"] == ""
    assert int(row["test_images"]) == 40          # 25 % of 160 digits, stratified
    assert "seconds_per_epoch" in row              # the CSV keeps the raw keys
    tex = (one_variant.tables / "table2-accuracy.tex").read_text()
    assert "test accuracy & seeds & test images & parameters" in tex
    body = tex[tex.index(r"\toprule"):]
    assert "s / epoch" in body and "(n = 1)" in body and r"$\pm$" not in body
    _, md = write_report(one_variant.path)
    text = md.read_text()
    assert "| test accuracy | seeds | test images |" in text and "(n = 1)" in text
    assert "seconds_per_epoch" not in text and "clean_acc" not in text
