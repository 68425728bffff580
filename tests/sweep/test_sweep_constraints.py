"""Constraints before compute: over-budget points are PRUNED untrained, diverging ones FAIL,
the sweep carries on; and ofat trains each of its deduplicated points once."""
from __future__ import annotations

import json

from reslab.cli import main
from reslab.sweep.storage import default_url


def test_budget_and_divergence_are_recorded_and_the_sweep_goes_on(write_sweep, tmp_path, sw):
    # resnet20 has 17,462 parameters at width 4 and 68,642 at width 8 (1 channel, 10 classes).
    # Plain SGD at lr 50 with weight decay 0.5 multiplies the weights by 1 - 50 * 0.5 = -24
    # every step: they overflow to inf (loss NaN) within the first epoch on any CPU. A large
    # lr alone is chaotic: it may just kill the ReLUs and leave a finite loss.
    path = write_sweep(sampler="grid", base_model={"max_params": 30_000}, base_train={
        "momentum": 0.0, "weight_decay": 0.5, "scheduler": "none", "batch_size": 32}, space={
            "train.lr": {"values": [0.05, 50.0]}, "model.width": {"values": [4, 8]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = {(float(r["train.lr"]), int(r["model.width"])): r
            for r in sw.read_csv(out / "trials.csv")}
    assert len(rows) == 4

    ok = rows[(0.05, 4)]
    assert ok["state"] == "COMPLETE" and float(ok["value"]) > 0
    for lr in (0.05, 50.0):
        pruned = rows[(lr, 8)]
        assert pruned["state"] == "PRUNED" and pruned["value"] == ""
        assert "max_params" in pruned["reason"] and "68,642" in pruned["reason"]
        assert float(pruned["seconds"]) < 1.0
        assert not (out / "trials" / pruned["number"]).exists()  # never trained

    failed = rows[(50.0, 4)]
    assert failed["state"] == "FAIL" and failed["reason"].startswith("diverged")
    result = json.loads((out / "trials" / failed["number"] / "result.json").read_text())
    assert result["stop_reason"] == "diverged"

    best = (out / "best.yaml").read_text()
    assert "lr: 0.05" in best and "width: 4" in best

    # FAIL (diverged) and PRUNED (budget) points are final: a re-run trains nothing.
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert len(sw.load_trials(default_url(out), "sweep")) == 4


def test_ofat_trains_each_deduplicated_point_once(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="ofat", base_train={"batch_size": 64}, space={
        "train.lr": {"values": [0.02, 0.05, 0.1]},
        "model.width": {"values": [4, 8]},
        "train.batch_size": {"values": [32, 64]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = sw.read_csv(out / "trials.csv")
    points = [(float(r["train.lr"]), int(r["model.width"]), int(r["train.batch_size"]))
              for r in rows]
    assert sorted(points) == sorted([(0.02, 4, 64), (0.05, 4, 64), (0.1, 4, 64),
                                     (0.05, 8, 64), (0.05, 4, 32)])
    assert {r["state"] for r in rows} == {"COMPLETE"}
    # The base lr 0.05 was trained 3 times: the base point, width 8 and batch 32.
    lr_table = (out / "factors.md").read_text().split("## train.lr")[1].split("##")[0]
    counts = {line.split("|")[1].strip(): line.split("|")[4].strip()
              for line in lr_table.splitlines() if line.startswith("| 0.")}
    assert counts == {"0.02": "1", "0.05": "3", "0.1": "1"}
