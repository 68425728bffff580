"""Sweeps against a real PostgreSQL server (started by the `postgres_url` fixture; skipped
when the PostgreSQL binaries are not installed)."""
from __future__ import annotations

import json

from optuna.trial import TrialState

from reslab.cli import main


def test_two_worker_grid_on_postgres_runs_every_point_once(write_sweep, tmp_path, sw,
                                                           postgres_url):
    path = write_sweep(name="pggrid", sampler="grid", space={
        "train.lr": {"values": [0.05, 0.1, 0.2]}, "model.width": {"values": [4]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2",
                 "--storage", postgres_url]) == 0
    trials = sw.load_trials(postgres_url, "pggrid")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params["train.lr"] for t in trials) == [0.05, 0.1, 0.2]
    rows = sw.read_csv(out / "trials.csv")
    assert sorted(float(r["train.lr"]) for r in rows) == [0.05, 0.1, 0.2]
    assert not (out / "study.db").exists()  # everything went to the server
    for t in trials:
        result = json.loads((out / "trials" / str(t.number) / "result.json").read_text())
        assert result["best_val_acc"] == t.value

    # A second "machine" (another sweep dir, same storage and study) finds nothing left to do.
    assert main(["sweep", str(path), "--out", str(tmp_path / "other"),
                 "--storage", postgres_url]) == 0
    assert len(sw.load_trials(postgres_url, "pggrid")) == 3


def test_postgres_killed_worker_is_retried_on_rerun(write_sweep, tmp_path, sw, postgres_url):
    sw.kill_and_resume(write_sweep, tmp_path, postgres_url, "killpg")
