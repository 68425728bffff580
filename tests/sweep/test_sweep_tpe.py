"""random/tpe budgets (exactly n_trials, extendable) and per-epoch pruning."""
from __future__ import annotations

import yaml
from optuna.trial import TrialState

from reslab.cli import main
from reslab.sweep.storage import default_url


def test_tpe_runs_exactly_n_trials_within_the_space_and_extends(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="tpe", n_trials=4, seed=3, space={
        "train.lr": {"low": 0.01, "high": 0.3, "log": True},
        "train.batch_size": {"low": 32, "high": 128, "step": 32},
        "model.width": {"values": [4, 8]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    trials = sw.load_trials(default_url(out), "sweep")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:
        assert 0.01 <= t.params["train.lr"] <= 0.3
        assert t.params["train.batch_size"] in (32, 64, 96, 128)
        assert t.params["model.width"] in (4, 8)
    rows = sw.read_csv(out / "trials.csv")
    assert [r["train.batch_size"] for r in rows] == [str(t.params["train.batch_size"])
                                                     for t in trials]

    # Raising n_trials on a finished study adds only the difference.
    spec = yaml.safe_load(path.read_text())
    spec["n_trials"] = 6
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert len(sw.load_trials(default_url(out), "sweep")) == 6


def test_median_pruner_stops_weak_trials_after_an_epoch(write_sweep, tmp_path, sw):
    # Grid order: five good learning rates complete first (the median pruner's startup
    # trials), then two that barely learn are pruned after an epoch or two of three.
    good, bad = [0.1, 0.15, 0.2, 0.25, 0.3], [1e-5, 2e-5]
    path = write_sweep(sampler="grid", pruner="median", base_train={"epochs": 3}, space={
        "train.lr": {"values": good + bad}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = {float(r["train.lr"]): r for r in sw.read_csv(out / "trials.csv")}
    assert {lr: rows[lr]["state"] for lr in good} == dict.fromkeys(good, "COMPLETE")
    for lr in bad:
        row = rows[lr]
        assert row["state"] == "PRUNED", row
        assert row["reason"].startswith("pruned by the median pruner after epoch")
        epochs = int(row["reason"].split("after epoch ")[1].split()[0])
        metrics = (out / "trials" / row["number"] / "metrics.jsonl").read_text().splitlines()
        assert epochs < 3 and len(metrics) == epochs


def test_repeated_random_points_reuse_the_result_without_training(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="random", n_trials=3, space={"model.width": {"values": [4]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = sw.read_csv(out / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert rows[1]["value"] == rows[2]["value"] == rows[0]["value"]
    assert rows[1]["reason"] == "same parameters as trial 0: its result reused, not trained again"
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0"]
    assert (out / "best.yaml").read_text().split("\n", 1)[1] == \
        (out / "trials" / "0" / "config.yaml").read_text()
