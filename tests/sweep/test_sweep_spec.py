"""SWEEP.yaml validation, space normalisation and ofat/grid point enumeration (no training)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reslab.cli import main
from reslab.errors import ReslabError
from reslab.sweep import load_sweep

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sweeps"


def test_every_example_validates():
    paths = sorted(EXAMPLES.glob("*.yaml"))
    assert {p.name for p in paths} >= {"width-lr-batch-5m.yaml", "batch-lr-momentum.yaml",
                                      "tpe-hyperband.yaml"}
    sweeps = {p.name: load_sweep(p) for p in paths}
    grid = sweeps["width-lr-batch-5m.yaml"]
    assert len(grid.points()) == 27 and grid.base.model.max_params == 5_000_000
    assert grid.base.data.source == "folder" and grid.base.data.val_fraction == 0.1
    assert len(sweeps["batch-lr-momentum.yaml"].points()) == 1 + 3 + 3 + 2
    assert sweeps["tpe-hyperband.yaml"].spec.pruner == "hyperband"


def test_ofat_varies_one_factor_at_a_time_and_keeps_one_base_point(write_sweep):
    # Base: lr 0.05, width 4, batch 64; every factor's values include its base value.
    sweep = load_sweep(write_sweep(sampler="ofat", base_train={"batch_size": 64}, space={
        "train.lr": {"values": [0.01, 0.05, 0.1]},
        "model.width": {"values": [4, 8]},
        "train.batch_size": {"values": [32, 64]}}))
    points = sweep.points()
    base = {"train.lr": 0.05, "model.width": 4, "train.batch_size": 64}
    assert len(points) == 1 + 2 + 1 + 1
    assert points.count(base) == 1
    for p in points:
        assert sum(p[k] != base[k] for k in base) <= 1
    assert {p["train.lr"] for p in points} == {0.01, 0.05, 0.1}


def test_ofat_base_value_outside_the_values_is_still_the_centre(write_sweep):
    sweep = load_sweep(write_sweep(sampler="ofat", space={
        "train.lr": {"values": [0.01, 0.02]}, "model.width": {"values": [4, 8]}}))
    assert sweep.points() == [{"train.lr": 0.01, "model.width": 4},
                              {"train.lr": 0.02, "model.width": 4},
                              {"train.lr": 0.05, "model.width": 4},
                              {"train.lr": 0.05, "model.width": 8}]
    assert sweep.choices("train.lr") == [0.01, 0.02, 0.05]  # base representable in the study


def test_grid_is_the_full_product(write_sweep):
    sweep = load_sweep(write_sweep(sampler="grid", space={
        "train.lr": {"values": [0.01, 0.1]}, "model.width": {"values": [4, 8, 16]}}))
    points = sweep.points()
    assert len(points) == 6 and len({tuple(p.values()) for p in points}) == 6


def test_yaml_strings_become_config_types(tmp_path, write_sweep):
    path = write_sweep(sampler="grid", space={"train.lr": {"values": [0.1]}})
    # PyYAML reads 1e-4 (no dot) as a string; the config schema makes it a float.
    path.write_text(path.read_text().replace("- 0.1", "- 1e-4"))
    assert load_sweep(path).spec.space["train.lr"].values == [0.0001]


def test_base_config_path_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "digits"}, "train": {"lr": 0.02}}))
    spec = tmp_path / "sweeps" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump({"base": "../configs/base.yaml", "sampler": "grid",
                                    "space": {"model.width": {"values": [4, 8]}}}))
    sweep = load_sweep(spec)
    assert sweep.base.train.lr == 0.02
    assert sweep.config_for({"model.width": 8}).model.width == 8


BAD = [
    ({"samplr": "grid"}, "unknown key 'samplr'"),
    ({"space": {"train.lr": {"values": [0.1], "lo": 1}}}, "unknown key 'space.train.lr.lo'"),
    ({"space": {"train.lr": {"low": 0.1}}}, "space.train.lr: expected values"),
    ({"space": {"train.lr": {"low": 0.1, "high": 0.01}}}, "space.train.lr: low (0.1) must be"),
    ({"space": {"train.lr": {"low": 0.001, "high": 0.1}}}, "space.train.lr: sampler grid needs"),
    ({"sampler": "tpe"}, "n_trials: required for sampler tpe"),
    ({"sampler": "anneal"}, "sampler = 'anneal': Input should be"),
    ({"space": {"train.lrr": {"values": [0.1]}}}, "space.train.lrr: unknown key 'train.lrr'"),
    ({"space": {"train.lr": {"values": [0.1, 500]}}}, "space.train.lr: train.lr = 500"),
    ({"space": {"train": {"values": [1]}}}, "space.train"),
    ({"space": {"train.plateau": {"values": [1]}}}, "space.train.plateau"),
    ({"objective": {"metric": "accuracy"}}, "objective: metric 'accuracy'"),
    ({"pruner": "asha"}, "pruner = 'asha': Input should be"),
    ({"space": {}}, "space: "),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[b[1][:30] for b in BAD])
def test_invalid_sweeps_fail_with_one_line_naming_the_key(write_sweep, capsys, change,
                                                          expected):
    keys = {"sampler": "grid", "space": {"train.lr": {"values": [0.1]}}, **change}
    path = write_sweep(**keys)
    with pytest.raises(ReslabError) as err:
        load_sweep(path)
    assert expected in str(err.value) and "\n" not in str(err.value)
    # The CLI prints it as one line and exits 2, before creating anything.
    assert main(["sweep", str(path), "--out", str(path.parent / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]
    assert not (path.parent / "out").exists()
