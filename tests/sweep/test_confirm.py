"""Sweep confirmation (`confirm: {top_k, repeats}`): the top trials retrained with fresh seeds,
best.yaml chosen by the confirmed mean, confirm.csv with both numbers, resumable, and a native
crash in a confirmation does not take the sweep down."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from reslab.cli import main
from reslab.config import load_config
from reslab.execute import ExecOptions
from reslab.execute.repeats import member_dir, plan
from reslab.runs.rundir import SweepDir
from reslab.sweep import load_sweep
from reslab.sweep.confirm import CONFIRM_SEED_OFFSET, confirm
from reslab.sweep.run import write_outputs

LRS = [0.02, 0.1]


def confirmed_results(out, trial: int) -> dict[int, float]:
    found = {}
    for seed in (CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1):
        path = out / "confirm" / f"trial-{trial}" / f"seed-{seed}" / "result.json"
        found[seed] = json.loads(path.read_text())["best_val_acc"]
    return found


def test_confirmation_retrains_the_top_trials_and_picks_by_confirmed_mean(write_sweep, tmp_path,
                                                                          sw, capsys):
    path = write_sweep(sampler="grid", space={"train.lr": {"values": LRS}},
                       confirm={"top_k": 2, "repeats": 2})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    trials = {int(r["number"]): r for r in sw.read_csv(out / "trials.csv")}
    rows = {int(r["trial"]): r for r in sw.read_csv(out / "confirm.csv")}
    assert set(rows) == set(trials) == {0, 1}
    means = {}
    for n, row in rows.items():
        values = confirmed_results(out, n)
        cfg = load_config(out / "confirm" / f"trial-{n}" / "seed-1001" / "config.yaml")
        assert cfg.train.seed == 1001 and cfg.train.lr == float(trials[n]["train.lr"])
        assert float(row["value"]) == float(trials[n]["value"])  # the single run...
        means[n] = np.mean(list(values.values()))                # ...next to its confirmation
        assert float(row["confirmed_mean"]) == pytest.approx(means[n])
        assert row["n"] == "2" and row["seeds"] == "1000;1001"
        assert float(row["ci95_low"]) <= means[n] <= float(row["ci95_high"])
    winner = max(means, key=lambda n: (means[n], float(trials[n]["value"])))
    assert [n for n, r in rows.items() if r["chosen"] == "yes"] == [winner]
    best = (out / "best.yaml").read_text()
    assert best.startswith(f"# best trial {winner} of this sweep by its confirmed mean")
    assert load_config(out / "best.yaml").train.lr == float(trials[winner]["train.lr"])
    assert load_config(out / "best.yaml").train.seed == 0  # the trial's config, its own seed
    assert "## Confirmation" in (out / "report.md").read_text()
    printed = capsys.readouterr().out
    assert f"Best trial {winner}: best_val_acc confirmed " in printed and "(single run " in printed

    # Re-running reuses the finished confirmation runs: nothing is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "confirm").rglob("result.json")}
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert "Confirming" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert sw.read_csv(out / "confirm.csv") == list(rows.values())


def fabricate_confirmation(sweep, sweep_dir: SweepDir, trial, values: list[float]) -> None:
    """Finished confirmation runs with the given objective values, written by hand."""
    from reslab.sweep.confirm import confirmation_of

    c = confirmation_of(trial, sweep, sweep_dir, None)
    c.target.path.mkdir(parents=True)
    c.target.write_plan(c.cfg)
    fan = plan(c.cfg)
    for member, value in zip(fan.members, values):
        run = member_dir(c.target, fan, member)
        run.path.mkdir()
        run.write_start(member.cfg, [str(i) for i in range(10)])
        run.append_metrics({"epoch": 1, "val_acc": value})
        run.write_result({"best_val_acc": value, "stop_reason": "completed"})


def test_best_yaml_follows_the_confirmed_mean_not_the_single_run(write_sweep, tmp_path, sw):
    """Trial 0 won its single run (0.9) but confirms at 0.70; trial 1 (0.8) confirms at 0.85:
    best.yaml is trial 1's config, and confirm.csv shows the winner's curse of trial 0."""
    path = write_sweep(sampler="grid", space={"train.lr": {"values": LRS}},
                       confirm={"top_k": 2, "repeats": 2})
    sweep, sweep_dir = load_sweep(path), SweepDir(tmp_path / "out")
    sweep_dir.claim("sweep")
    study = optuna.create_study(direction="maximize")
    space = {"train.lr": CategoricalDistribution(LRS)}
    for lr, value in zip(LRS, (0.9, 0.8)):
        study.add_trial(optuna.create_trial(params={"train.lr": lr}, value=value,
                                            distributions=space))
    trials = study.get_trials()
    fabricate_confirmation(sweep, sweep_dir, trials[0], [0.72, 0.68])
    fabricate_confirmation(sweep, sweep_dir, trials[1], [0.86, 0.84])
    found = confirm(study, sweep, sweep_dir, ExecOptions())  # all finished: no training
    write_outputs(sweep_dir, study, sweep, found)
    rows = {r["trial"]: r for r in sw.read_csv(sweep_dir.confirm_csv)}
    assert (rows["0"]["value"], rows["0"]["confirmed_mean"], rows["0"]["chosen"]) == \
        ("0.9", repr(0.70), "")
    assert (rows["1"]["value"], rows["1"]["chosen"]) == ("0.8", "yes")
    assert float(rows["1"]["confirmed_mean"]) == pytest.approx(0.85)
    assert (sweep_dir.best_yaml.read_text().startswith(
        "# best trial 1 of this sweep by its confirmed mean: best_val_acc 0.8500 ± "))
    assert load_config(sweep_dir.best_yaml).train.lr == 0.1
    report = sweep_dir.report_md.read_text()
    assert "## Confirmation" in report and "winner's curse" in report


# A user model that segfaults in training when built under train.seed == crash_seed.
CRASHY = '''
import ctypes
import torch
from torch import nn

class CrashOnSeed(nn.Module):
    def __init__(self, num_classes, in_chans, crash_seed=-1):
        super().__init__()
        self.crash = torch.initial_seed() == crash_seed   # train.seed seeds the model's init
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, num_classes))

    def forward(self, x):
        if self.crash and self.training:
            ctypes.string_at(0)
        return self.net(x)
'''


def test_a_crash_in_a_confirmation_costs_that_confirmation_not_the_sweep(write_sweep, tmp_path,
                                                                        sw, capsys):
    (tmp_path / "crashy.py").write_text(CRASHY)
    path = write_sweep(sampler="grid", base_model={"arch": f"{tmp_path / 'crashy.py'}:CrashOnSeed"},
                       space={"model.kwargs.crash_seed": {"values": [1001, -1]}},
                       confirm={"top_k": 2, "repeats": 2})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert {r["state"] for r in sw.read_csv(out / "trials.csv")} == {"COMPLETE"}
    rows = {r["model.kwargs.crash_seed"]: r for r in sw.read_csv(out / "confirm.csv")}
    assert rows["1001"]["reason"].startswith("crashed: signal 11") and rows["1001"]["n"] == "1"
    assert rows["1001"]["chosen"] == "" and rows["-1"]["chosen"] == "yes"
    assert load_config(out / "best.yaml").model.kwargs["crash_seed"] == -1
    assert "confirmation of trial" in capsys.readouterr().err
