"""A 2-worker grid sweep on SQLite: every point exactly once, outputs, best.yaml, resume."""
from __future__ import annotations

import json

from optuna.trial import TrialState

from reslab.cli import main
from reslab.config import load_config
from reslab.sweep.storage import default_url
from reslab.utils import available_cores

LRS, WIDTHS = [0.05, 0.2], [4, 8]


def test_two_worker_grid_runs_every_point_once_and_writes_outputs(write_sweep, tmp_path, sw,
                                                                 capsys):
    # train.threads unset: each of the 2 workers gets max(1, cores // 2) threads.
    path = write_sweep(sampler="grid", base_train={"epochs": 2, "threads": None}, space={
        "train.lr": {"values": LRS}, "model.width": {"values": WIDTHS}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0

    rows = sw.read_csv(out / "trials.csv")
    assert list(rows[0])[:5] == ["number", "state", "value", "reason", "seconds"]
    points = sorted((float(r["train.lr"]), int(r["model.width"])) for r in rows)
    assert points == sorted((lr, w) for lr in LRS for w in WIDTHS)
    assert {r["state"] for r in rows} == {"COMPLETE"}

    trials = sw.load_trials(default_url(out), "sweep")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    for t in trials:  # each trial is a normal run directory
        run = out / "trials" / str(t.number)
        result = json.loads((run / "result.json").read_text())
        assert result["best_val_acc"] == t.value and result["epochs_run"] == 2
        assert load_config(run / "config.yaml").train.threads == max(1, available_cores() // 2)

    best = max(trials, key=lambda t: t.value)
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg == load_config(out / "trials" / str(best.number) / "config.yaml")
    assert best_cfg.train.lr == best.params["train.lr"]
    assert best_cfg.model.width == best.params["model.width"]
    # `reslab train best.yaml` reproduces the best trial (to within one validation image).
    assert main(["train", str(out / "best.yaml"), "--out", str(tmp_path / "repro"),
                 "--quiet"]) == 0
    again = json.loads((tmp_path / "repro" / "result.json").read_text())["best_val_acc"]
    assert abs(again - best.value) <= 1 / 360 + 1e-9

    factors = (out / "factors.md").read_text()
    for key in ("## train.lr", "## model.width", "| value | best best_val_acc | mean | count |"):
        assert key in factors
    for w in WIDTHS:  # each width ran with both learning rates
        row = next(line for line in factors.splitlines() if line.startswith(f"| {w} |"))
        assert row.endswith("| 2 |")
        vals = [t.value for t in trials if t.params["model.width"] == w]
        assert f"| {max(vals):.4f} | {sum(vals) / 2:.4f} |" in row

    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {"param_train.lr.png", "param_model.width.png", "history.png", "importance.png",
            "trial_learning_curves.png"} <= plots
    printed = capsys.readouterr().out
    assert printed.count(" COMPLETE ") == 4  # one plain line per finished trial (no TTY)

    # Re-running resumes: nothing is queued or trained again.
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert "0 trial(s) queued" in capsys.readouterr().out
    assert len(sw.load_trials(default_url(out), "sweep")) == 4
    assert sw.read_csv(out / "trials.csv") == rows


def test_a_point_queued_twice_trains_once(write_sweep, tmp_path, sw):
    """Two machines starting the same sweep at the same moment may both queue a point: the
    higher-numbered copy is recorded as a duplicate and never trains."""
    from reslab.sweep import load_sweep
    from reslab.sweep.storage import make_storage
    from reslab.sweep.study import open_study

    path = write_sweep(sampler="grid", space={"train.lr": {"values": [0.1]}})
    out = tmp_path / "out"
    study = open_study(load_sweep(path), make_storage(default_url(out)), "sweep")
    for _ in range(2):
        study.enqueue_trial({"train.lr": 0.1})
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = sw.read_csv(out / "trials.csv")
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "PRUNED")]
    assert rows[1]["reason"] == "duplicate of trial 0 (queued twice)"
    assert not (out / "trials" / "1").exists()


def test_journal_storage(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="grid", space={"model.width": {"values": [4, 8]}})
    out, journal = tmp_path / "out", tmp_path / "journal.log"
    assert main(["sweep", str(path), "--out", str(out), "--storage", f"journal:{journal}"]) == 0
    assert journal.stat().st_size > 0 and not (out / "study.db").exists()
    assert [r["state"] for r in sw.read_csv(out / "trials.csv")] == ["COMPLETE"] * 2


TINY_USER_MODEL = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, hidden: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, hidden, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
'''


def test_a_user_module_sweeps_and_its_best_config_finds_the_file(write_sweep, tmp_path, sw):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.py").write_text(TINY_USER_MODEL)
    path = write_sweep(sampler="grid", base_train={"epochs": 1},
                       base_model={"arch": "models/tiny.py:Tiny", "width": None},
                       space={"train.lr": {"values": [0.05, 0.2]},
                              "model.kwargs.hidden": {"values": [4, 8]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 0
    rows = sw.read_csv(out / "trials.csv")
    assert len(rows) == 4 and {r["state"] for r in rows} == {"COMPLETE"}
    assert all(float(r["value"]) > 0.1 for r in rows)  # above chance on 10 digit classes
    best = load_config(out / "best.yaml")
    assert best.model.arch == f"{(tmp_path / 'models' / 'tiny.py').resolve()}:Tiny"
