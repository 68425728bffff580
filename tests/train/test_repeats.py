"""Repeats: `reslab train CONFIG --repeats N` (or a train.seed list) trains one run per seed into
OUT/seed-K/ and summarises them in OUT/summary.json / summary.csv; re-running continues."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as st

import reslab
from reslab.config import load_config
from reslab.errors import ReslabError
from reslab.execute import runner
from reslab.runs.rundir import RepeatsDir
from reslab.stats import metric_bounds

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
SUMMARY_KEYS = ["mean", "std", "ci95_low", "ci95_high", "n", "values"]


def results_of(out: Path, seeds) -> list[dict]:
    return [json.loads((out / f"seed-{s}" / "result.json").read_text()) for s in seeds]


def test_cli_repeats_three_seeds_summary_matches_numpy_scipy(cli, tmp_path):
    out = tmp_path / "demo-x3"
    code, stdout, err = cli("train", DEMO, "--repeats", 3, "--out", out, "--set",
                            "train.epochs=2", "--set", "model.width=8", "--set",
                            "train.tensorboard=false", "--set", "train.progress=false")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["plots", "seed-0", "seed-1",
                                                                 "seed-2"]
    for seed in range(3):  # same config but the seed, same split (same test labels)
        cfg = load_config(out / f"seed-{seed}" / "config.yaml")
        assert cfg.train.seed == seed and cfg.train.epochs == 2 and cfg.model.width == 8
        labels = np.load(out / f"seed-{seed}" / "predictions.npz")["labels"]
        assert np.array_equal(labels, np.load(out / "seed-0" / "predictions.npz")["labels"])
    assert load_config(out / "repeats.yaml").train.seed == [0, 1, 2]

    summary = json.loads((out / "summary.json").read_text())
    results = results_of(out, range(3))
    for key in ("best_val_acc", "test_acc", "test_loss", "params", "epochs_run"):
        values = np.array([r[key] for r in results], dtype=float)
        entry = summary[key]
        assert list(entry) == SUMMARY_KEYS
        assert entry["n"] == 3 and entry["values"] == pytest.approx(values.tolist())
        assert entry["mean"] == pytest.approx(values.mean())
        assert entry["std"] == pytest.approx(values.std(ddof=1))
        lo, hi = metric_bounds(key) or (-math.inf, math.inf)  # bounded metrics: clipped
        if entry["std"] > 0:
            low, high = st.t.interval(0.95, 2, loc=values.mean(), scale=st.sem(values))
            assert (entry["ci95_low"], entry["ci95_high"]) == pytest.approx(
                (max(low, lo), min(high, hi)))
        half = st.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
        if lo < values.mean() - half and values.mean() + half < hi:
            assert entry["ci95_high"] - entry["ci95_low"] == pytest.approx(2 * half, abs=1e-12)
    assert summary["test_acc"]["std"] > 0  # the seeds did differ: the check above is not vacuous

    with open(out / "summary.csv", newline="") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values()))) == ["metric", *SUMMARY_KEYS]
    assert float(rows["test_acc"]["mean"]) == pytest.approx(summary["test_acc"]["mean"])
    assert [float(v) for v in rows["test_acc"]["values"].split(";")] == \
        pytest.approx(summary["test_acc"]["values"])

    assert "Summary of 3 run(s): best_val_acc" in stdout and "95 % CI" in stdout
    report = (out / "report.md").read_text()
    assert "*reslab repeats report*" in report and "## Summary" in report
    assert "± is the half-width" in report and "plots/mean_curves.png" in report
    assert (out / "plots" / "mean_curves.png").stat().st_size > 0
    assert all((out / f"seed-{s}" / "report.html").is_file() for s in range(3))


def test_seed_list_is_repeats_and_api_returns_the_summary(fast_config, tmp_path):
    cfg = fast_config(data={"max_per_class": 20}, train={"epochs": 1, "seed": [3, 7]})
    summary = reslab.train(cfg, out=tmp_path / "list", quiet=True)
    assert sorted(p.name for p in (tmp_path / "list").glob("seed-*")) == ["seed-3", "seed-7"]
    assert summary["best_val_acc"]["values"] == [r["best_val_acc"] for r in
                                                 results_of(tmp_path / "list", (3, 7))]
    # train_repeats: always a fan-out, even for one seed (no CI from one run).
    one = reslab.train_repeats(fast_config(data={"max_per_class": 20}, train={"epochs": 1}),
                               out=tmp_path / "one", quiet=True)
    assert one["best_val_acc"]["n"] == 1 and one["best_val_acc"]["ci95_low"] is None
    assert (tmp_path / "one" / "seed-0" / "result.json").is_file()


class Interrupt(Exception):
    pass


def test_interrupted_repeats_continue_without_retraining_finished_seeds(fast_config, tmp_path,
                                                                        monkeypatch):
    cfg = fast_config(data={"max_per_class": 20}, train={"epochs": 2})
    out = tmp_path / "rep"

    def stop_in_seed_1(row):  # seed-1, after epoch 1 was checkpointed
        if (out / "seed-1" / "metrics.jsonl").is_file() and row["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        reslab.train(cfg, out=out, repeats=3, on_epoch=stop_in_seed_1, quiet=True)
    assert (out / "seed-0" / "result.json").is_file()
    assert not (out / "seed-1" / "result.json").is_file() and (out / "seed-1" / "last.pt").is_file()
    assert not (out / "seed-2").exists() and not (out / "summary.json").exists()
    seed0 = (out / "seed-0" / "result.json").read_text()

    calls = []
    real = runner.run_training
    monkeypatch.setattr(runner, "run_training",
                        lambda *a, **k: calls.append(k.get("resume") or k["out"]) or real(*a, **k))
    summary = reslab.train(cfg, out=out, repeats=3, quiet=True)
    assert calls == [out / "seed-1", out / "seed-2"]  # seed-1 resumed, seed-2 trained, no seed-0
    assert (out / "seed-0" / "result.json").read_text() == seed0
    epochs = [r["epoch"] for r in RepeatsDir(out).seed_run(1).read_metrics()]
    assert epochs == [1, 2]  # resumed after epoch 1, not started over
    assert summary["best_val_acc"]["n"] == 3
    assert json.loads((out / "summary.json").read_text()) == summary

    calls.clear()  # a third time: everything reused, the summary rewritten the same
    assert reslab.train(cfg, out=out, repeats=3, quiet=True) == summary and calls == []
    # --resume of the repeats directory continues its plan (here: nothing left to train).
    assert reslab.train(resume=out, quiet=True) == summary and calls == []


def test_a_finished_seed_with_another_config_is_refused(fast_config, tmp_path):
    cfg = fast_config(data={"max_per_class": 10}, train={"epochs": 1})
    reslab.train(cfg, out=tmp_path / "r", repeats=1, quiet=True)
    changed = fast_config(data={"max_per_class": 10}, train={"epochs": 1, "lr": 0.01})
    with pytest.raises(ReslabError, match=r"seed-0 was trained with train.lr = 0.05, the "
                                          r"config now gives 0.01"):
        reslab.train(changed, out=tmp_path / "r", repeats=1, quiet=True)


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats 0: expected 1 or more"),
    (["--repeats", "2", "--set", "train.seed=[0,1,2]"], "--repeats 2 with train.seed = [0, 1, 2]"),
    (["--repeats", "2", "--folds", "3"], "--folds with --repeats"),
    (["--folds", "1"], "--folds 1: expected 2 or more"),
    (["--set", "train.seed=[]"], "train.seed = []: expected a seed or a non-empty list"),
])
def test_bad_fan_outs_are_one_line_errors(cli, tmp_path, args, message):
    code, _, err = cli("train", DEMO, "--out", tmp_path / "x", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_one_run_refuses_a_seed_list(fast_config, tmp_path):
    from reslab.training import train

    with pytest.raises(ReslabError, match=r"train.seed = \[0, 1\]: several runs, not one"):
        train(fast_config(train={"seed": [0, 1]}), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_sweep_base_with_a_seed_list_is_refused(tmp_path, fast_config):
    from reslab.sweep import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": fast_config(train={"seed": [0, 1]}), "sampler": "grid",
                                    "space": {"train.lr": {"values": [0.1]}}}))
    with pytest.raises(ReslabError, match="base: train.seed names several runs"):
        load_sweep(path)
