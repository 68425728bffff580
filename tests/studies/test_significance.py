"""Significance in `reslab compare`: repeats give paired t-tests over seeds, single runs
McNemar's test on the same test images; only entries that share a test split are tested."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from reslab.config import load_config
from reslab.errors import ReslabError
from reslab.execute import runner
from reslab.runs.rundir import CompareDir, RunDir
from reslab.stats import Comparison
from reslab.studies.compare import load_compare, run_compare
from reslab.studies.significance import Trained, pair_tests, why_not_shared


def digits(name, epochs, seed=0, **data):
    """A digits ResNet-20 (width 8) that reaches ~97-98 % test accuracy in 15-20 epochs."""
    return {"name": name,
            "data": {"source": "digits", "val_fraction": 0.1, "test_fraction": 0.25,
                     "augment": "crop", "pad": 1, **data},
            "model": {"arch": "resnet20", "width": 8},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 0.1, "scheduler": "onecycle",
                      "seed": seed, "tensorboard": False, "report": False, "device": "cpu",
                      "progress": False}}


def write_study(path: Path, **study) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def epochs_1_vs_15(tmp_path_factory):
    """repeats: 3 of a 1-epoch and a 15-epoch model (~25 % vs ~97 % test accuracy)."""
    root = tmp_path_factory.mktemp("epochs")
    study = write_study(root / "epochs.yaml", name="epochs", repeats=3,
                        runs=[digits("e1", 1), digits("e15", 15)])
    rows = run_compare(study, root / "out", quiet=True, log=lambda _: None)
    return study, root / "out", rows


def test_one_vs_fifteen_epochs_is_significant_with_repeats(epochs_1_vs_15):
    _, out, rows = epochs_1_vs_15
    for name in ("e1", "e15"):
        assert sorted(p.name for p in (out / "runs" / name).glob("seed-*")) == \
            ["seed-0", "seed-1", "seed-2"]
        assert (out / "runs" / name / "summary.json").is_file()
    (sig,) = read_csv(out / "significance.csv")
    assert (sig["pair"], sig["test"], sig["n"], sig["significant"]) == \
        ("e15 vs e1", "paired t", "3", "True")
    assert float(sig["p_holm"]) < 0.05 and float(sig["mean_difference"]) > 0.3
    # The test is over the seeds' test accuracies, paired by seed.
    acc = {name: [json.loads((out / "runs" / name / f"seed-{s}" / "result.json").read_text())
                  ["test_acc"] for s in range(3)] for name in ("e1", "e15")}
    assert float(sig["mean_difference"]) == pytest.approx(np.mean(acc["e15"]) - np.mean(acc["e1"]))
    from scipy import stats as st
    assert float(sig["p_value"]) == pytest.approx(st.ttest_rel(acc["e15"], acc["e1"]).pvalue)

    markdown = (out / "compare.md").read_text()
    assert "## Significance" in markdown and "| e15 vs e1 | test_acc | paired t | 3 |" in markdown
    assert "e15 beats e1 by" in markdown and "significant)" in markdown
    table = {r["name"]: r for r in read_csv(out / "compare.csv")}
    assert table["e15"]["runs"] == "3"
    assert float(table["e15"]["test_acc"]) == pytest.approx(np.mean(acc["e15"]))
    low, high = float(table["e15"]["test_acc_ci95_low"]), float(table["e15"]["test_acc_ci95_high"])
    assert low <= float(table["e15"]["test_acc"]) <= high
    assert "± " in markdown


def test_comparison_report_has_bands_and_the_significance_table(epochs_1_vs_15):
    _, out, _ = epochs_1_vs_15
    report = (out / "report.md").read_text()
    assert "## Significance" in report and "E15" not in report  # entry names as given
    assert "e15 beats e1 by" in report and "| e15 vs e1 | test_acc | paired t |" in report
    assert "plots/mean_curves.png" in report and (out / "plots" / "mean_curves.png").is_file()
    assert "test_acc" in report and "± " in report


def test_rerun_with_repeats_reuses_every_seed_run(epochs_1_vs_15, monkeypatch):
    study, out, rows = epochs_1_vs_15

    def refuse(*args, **kwargs):
        raise AssertionError("a finished seed run was trained again")

    monkeypatch.setattr(runner, "run_training", refuse)
    assert run_compare(study, out, quiet=True, log=lambda _: None) == rows


def test_two_seeds_of_one_config_get_mcnemar_on_their_own_predictions(tmp_path):
    """Single runs differing only in train.seed: McNemar's test on the same 450 test images,
    counted from the runs' predictions.npz. Whether two seeds differ significantly is a property
    of the trajectories (it changes with the CPU's kernels), so the test checks the numbers and
    the verdict against the predictions, not a fixed verdict."""
    study = write_study(tmp_path / "seeds.yaml", runs=[digits("seed0", 20, seed=0),
                                                       digits("seed1", 20, seed=1)])
    run_compare(study, tmp_path / "out", quiet=True, log=lambda _: None)
    (sig,) = read_csv(tmp_path / "out" / "significance.csv")
    assert sig["test"].startswith("McNemar") and sig["n"] == "450"
    pred = {n: np.load(tmp_path / "out" / "runs" / n / "predictions.npz") for n in
            ("seed0", "seed1")}
    assert np.array_equal(pred["seed0"]["labels"], pred["seed1"]["labels"])
    right = {n: p["pred"] == p["labels"] for n, p in pred.items()}
    assert all(r.mean() > 0.8 for r in right.values())  # both trained (chance is 0.1)
    only_0 = int(np.sum(right["seed0"] & ~right["seed1"]))
    only_1 = int(np.sum(right["seed1"] & ~right["seed0"]))
    from scipy import stats as st
    if only_0 + only_1 < 25:
        expected = ("McNemar exact", st.binomtest(only_0, only_0 + only_1, 0.5).pvalue
                    if only_0 + only_1 else 1.0)
    else:
        expected = ("McNemar chi2", st.chi2.sf((abs(only_0 - only_1) - 1) ** 2
                                               / (only_0 + only_1), df=1))
    assert sig["test"] == expected[0]
    assert float(sig["p_value"]) == pytest.approx(expected[1])
    significant = expected[1] < 0.05  # one pair: Holm leaves p as it is
    assert sig["significant"] == str(significant)
    markdown = (tmp_path / "out" / "compare.md").read_text()
    if significant:
        assert " beats " in markdown and "significant)" in markdown
    else:
        assert "is within noise (McNemar" in markdown


# ----------------------------------------------------------------------------- no training
def fake_run(path: Path, cfg: dict, test_acc: float, labels=None, pred=None) -> RunDir:
    """A finished run directory written by hand: config, result and predictions."""
    run = RunDir(path)
    path.mkdir(parents=True)
    run.write_start(load_config(cfg), [str(i) for i in range(3)])
    run.write_result({"best_val_acc": test_acc, "test_acc": test_acc})
    if labels is not None:
        run.write_predictions(np.asarray(labels), np.asarray(pred), np.ones(len(labels)))
    return run


def trained(tmp_path, name, data=None, accs=(0.9,), labels=None, pred=None) -> Trained:
    cfg = digits(name, 1, **(data or {}))
    runs = {s: fake_run(tmp_path / name / f"seed-{s}", cfg, a, labels, pred)
            for s, a in enumerate(accs)}
    return Trained(name, load_config(cfg), runs)


def test_only_entries_on_the_same_test_images_are_tested(tmp_path):
    labels = [0, 1, 2] * 20
    a = trained(tmp_path, "a", accs=(0.90, 0.91, 0.92))
    b = trained(tmp_path, "b", accs=(0.80, 0.82, 0.81))
    c = trained(tmp_path, "c", {"val_fraction": 0.2}, accs=(0.5, 0.6, 0.7))
    d = trained(tmp_path, "d", {"root": "/elsewhere", "source": "folder"}, accs=(0.9, 0.8, 0.7))
    assert why_not_shared(a, c) == "data.val_fraction differs"
    assert why_not_shared(a, d) == "data.source, data.root differ"
    results = dict(((r.a, r.b), (m, r)) for m, r in pair_tests([a, b, c, d]))
    assert set(results) == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"),
                            ("c", "d")}
    metric, ab = results[("a", "b")]
    assert metric == "test_acc" and ab.test == "paired t" and ab.p_holm == ab.p_value
    for pair in (("a", "c"), ("b", "d"), ("c", "d")):
        assert results[pair][1].test.startswith("not compared: ")
        assert results[pair][1].p_value is None and not results[pair][1].significant

    # Trees that differ only in data.root (reslab convert) count as one split when the final
    # evaluations saw the same labels in the same order.
    pred = labels[:-3] + [1, 2, 0]
    e = trained(tmp_path, "e", {"root": "/srgb", "source": "folder"}, labels=labels, pred=labels)
    f = trained(tmp_path, "f", {"root": "/linear", "source": "folder"}, labels=labels, pred=pred)
    g = trained(tmp_path, "g", {"root": "/log", "source": "folder"}, labels=labels[::-1],
                pred=labels)
    assert why_not_shared(e, f) is None
    assert why_not_shared(e, g) == "data.root differs and the evaluated labels do not match"
    (metric, ef), = [x for x in pair_tests([e, f]) if x[1].b == "f"]
    assert ef.test == "McNemar exact" and ef.n == 60 and ef.p_value == 0.25  # 3 discordant


def test_significance_csv_round_trips(tmp_path):
    out = CompareDir(tmp_path)
    results = [("test_acc", Comparison("a", "b", "paired t", 4.2, 0.01, 0.05, True, 3,
                                       None, None, 0.02)),
               ("test_acc", Comparison("a", "c", "not compared: data.root differs", None,
                                       None, None, False, 2))]
    out.write_significance(results)
    assert out.read_significance() == results
    header = (tmp_path / "significance.csv").read_text().splitlines()[0]
    assert header == ("metric,pair,a,b,test,n,statistic,p_value,p_holm,mean_difference,"
                      "ci95_low,ci95_high,significant")


def test_an_existing_repeats_directory_is_an_entry(epochs_1_vs_15, tmp_path, monkeypatch):
    _, out, rows = epochs_1_vs_15
    monkeypatch.setattr(runner, "run_training", lambda *a, **k: pytest.fail("retrained"))
    study = write_study(tmp_path / "s.yaml", runs=[str(out / "runs" / "e1"),
                                                   str(out / "runs" / "e15")])
    got = run_compare(study, tmp_path / "again", quiet=True, log=lambda _: None)
    assert [r["runs"] for r in got] == [3, 3]
    assert got[1]["test_acc"] == pytest.approx(rows[1]["test_acc"])
    (sig,) = read_csv(tmp_path / "again" / "significance.csv")
    assert sig["test"] == "paired t" and sig["significant"] == "True"


@pytest.mark.parametrize("study, message", [
    ({"repeats": 0}, "repeats = 0"),
    ({"repeats": 2, "runs": [digits("x", 1, seed=[0, 1, 2])]},
     "runs[0]: --repeats 2 with train.seed = [0, 1, 2]"),
    ({"runs": [{**digits("x", 1), "data": {"folds": 3}}]}, "runs[0]: data.folds = 3 without "),
])
def test_bad_repeats_in_a_study_are_one_line_errors(tmp_path, study, message):
    study = {"runs": [digits("x", 1)], **study}
    with pytest.raises(ReslabError) as err:
        load_compare(write_study(tmp_path / "s.yaml", **study))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_seed_list_in_an_entry_is_its_repeats(tmp_path):
    study = load_compare(write_study(tmp_path / "s.yaml", runs=[digits("x", 1, seed=[4, 5]),
                                                              digits("y", 1)]))
    x, y = study.entries
    assert [m.name for m in x.fan.members] == ["seed-4", "seed-5"] and y.fan is None
    study = load_compare(write_study(tmp_path / "s.yaml", repeats=2, runs=[digits("y", 1, seed=7)]))
    assert [m.key for m in study.entries[0].fan.members] == [7, 8]


def test_the_repeats_example_validates():
    study = load_compare(Path(__file__).resolve().parents[2] / "examples" / "compare" /
                       "digits-widths-repeats.yaml")
    assert [e.name for e in study.entries] == ["resnet20-w8", "resnet20-w16"]
    for entry in study.entries:
        assert [m.name for m in entry.fan.members] == ["seed-0", "seed-1", "seed-2"]


def test_single_runs_whose_predictions_do_not_line_up_are_not_tested(tmp_path):
    """Same split keys but other images (e.g. a folder edited between the runs): McNemar
    would pair unrelated images, so the pair is reported untestable rather than tested."""
    h = trained(tmp_path, "h", labels=[0, 1, 2] * 5, pred=[0, 1, 2] * 5)
    i = trained(tmp_path, "i", labels=[0, 1] * 6, pred=[0, 1] * 6)
    ((metric, r),) = pair_tests([h, i])
    assert r.test == "none" and r.p_value is None and not r.significant
