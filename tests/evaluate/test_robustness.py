import csv

import pytest
import torch

import reslab
from reslab.evaluate import evaluate_run
from reslab.evaluate.perturb import CORRUPTIONS, SEED_SUITE, shift_intensity
from reslab.evaluate.robustness import (
    on_rgb,
    run_robustness,
    through_display,
)
from reslab.runs.rundir import ROBUSTNESS_COLUMNS as COLUMNS

# 250 digits (25 per class): 50 test images keep 51 perturbed passes to a few seconds.
CONFIG = {
    "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.2,
             "max_per_class": 25, "augment": "crop", "pad": 1},
    "model": {"arch": "resnet20", "width": 8},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "tensorboard": False,
              "report": False, "device": "cpu", "progress": False},
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness") / "run"
    reslab.train(CONFIG, out=out, quiet=True)
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clean_row_equals_eval_and_seed_rows(digits_run):
    rows = run_robustness(digits_run)
    table = read_csv(digits_run / "robustness.csv")
    assert list(table[0]) == list(COLUMNS)
    assert table[0] == {"perturbation": "clean", "severity": "0",
                        "accuracy": table[0]["accuracy"], "drop": "0.0", "mode": "display"}
    expected = evaluate_run(digits_run, write=False)["accuracy"]
    assert float(table[0]["accuracy"]) == expected == rows[0]["accuracy"]
    assert [(r["perturbation"], r["severity"]) for r in table[1:]] == \
        [(name, "1") for name in SEED_SUITE]
    for row in table[1:]:
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert float(row["drop"]) == pytest.approx(expected - float(row["accuracy"]))
    md = (digits_run / "robustness.md").read_text()
    assert "Clean accuracy" in md and "| rotate30 | 1 |" in md


def test_corruption_suite_has_ten_by_five_rows(digits_run):
    rows = run_robustness(digits_run, suite="corruptions")
    table = read_csv(digits_run / "robustness.csv")
    assert len(rows) == len(table) == 10 * 5 + 1
    assert {r["perturbation"] for r in table[1:]} == set(CORRUPTIONS)
    assert sorted({int(r["severity"]) for r in table[1:]}) == [1, 2, 3, 4, 5]
    assert "Mean corruption accuracy" in (digits_run / "robustness.md").read_text()


def without_mode(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "mode"} for r in rows]


def test_raw_on_srgb_data_equals_display_mode(digits_run):
    raw = run_robustness(digits_run, raw=True, write=False)
    assert {r["mode"] for r in raw} == {"raw"}
    assert without_mode(raw) == without_mode(run_robustness(digits_run, write=False))


def test_cli_prints_table_and_bad_suite_is_one_line_exit_2(digits_run, cli):
    code, out, err = cli("robustness", digits_run)
    assert code == 0, err
    assert "clean" in out and "intensity_plus50" in out
    assert (digits_run / "plots" / "robustness.png").stat().st_size > 0
    code, out, err = cli("robustness", digits_run, "--suite", "nope")
    assert code == 2
    assert err.count("\n") == 1 and "--suite 'nope'" in err and "corruptions" in err


# ----------------------------------------------------------------------------- encodings
def test_uint8_round_trip_is_exact_and_shift_rounds_to_levels():
    u8 = torch.arange(0, 256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(through_display(u8, lambda x: x, "srgb", 255.0), u8)
    shifted = through_display(u8, shift_intensity, "srgb", 255.0)
    assert shifted.dtype == torch.uint8
    assert torch.equal(shifted.long(), (u8.long() + 50).clamp(max=255))


@pytest.mark.parametrize("fmt", ["linear", "log"])
def test_float_formats_round_trip_through_display(fmt):
    lin = torch.linspace(0.001, 1.0, 3 * 64).view(1, 3, 8, 8)
    stored = (lin if fmt == "linear" else torch.log(lin + 1e-4)).half()
    back = through_display(stored, lambda x: x, fmt, 1.0)
    assert back.dtype == torch.float16
    assert torch.allclose(back.float(), stored.float(), atol=2e-3, rtol=2e-3)


# Raw mode's units per format: test_robustness_raw.py.


def test_grey_images_are_perturbed_as_rgb_and_averaged_back():
    grey = torch.full((2, 1, 4, 4), 0.5)
    out = on_rgb(SEED_SUITE["color_balance_b10_g20_r30"], grey)
    assert out.shape == grey.shape
    assert torch.allclose(out, torch.full_like(grey, 0.5 + 20 / 255))


def test_linear_tiff_rgb_run_with_data_root_display_and_raw(tmp_path, make_tree, fast_config):
    from reslab.data.convert import convert_tree

    tree = tmp_path / "linear"
    convert_tree(make_tree(per_class=6, size=12), tree, "linear-tiff")
    cfg = fast_config(data={"source": "folder", "root": str(tree), "val_fraction": 0.25,
                            "test_fraction": 0.0, "augment": "none"})
    reslab.train(cfg, out=tmp_path / "run", quiet=True)
    display = run_robustness(tmp_path / "run", data_root=tree, write=False)
    raw = run_robustness(tmp_path / "run", data_root=tree, raw=True, write=False)
    assert without_mode(display[:1]) == without_mode(raw[:1])
    assert display[0]["accuracy"] == evaluate_run(tmp_path / "run", tree, write=False)["accuracy"]
    assert [r["perturbation"] for r in raw[1:]] == list(SEED_SUITE)
