import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from reslab.config import load_config
from reslab.errors import ReslabError
from reslab.execute import run_one, runner
from reslab.runs.rundir import CompareDir
from reslab.studies.compare import Entry, entry_specs, load_compare, run_compare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "compare"


def digits(name, width):
    return {"name": name,
            "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.2,
                     "max_per_class": 25, "augment": "crop", "pad": 1},
            "model": {"arch": "resnet20", "width": width},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "tensorboard": False,
                      "report": False, "device": "cpu", "progress": False}}


def write_study(path, **study):
    path.write_text(yaml.safe_dump(study))
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report_available():
    try:
        import reslab.report  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    study = write_study(root / "widths.yaml", name="widths", robustness=True,
                        overrides=["train.seed=0", "data.split_seed=0"],
                        runs=[digits("w4", 4), digits("w8", 8)])
    rows = run_compare(study, root / "out", quiet=True, log=lambda _: None)
    return study, root / "out", rows


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(runner, "run_training", refuse)


def test_compare_trains_both_and_writes_table_plots_report(compared):
    _, out, rows = compared
    table = read_csv(out / "compare.csv")
    assert [r["name"] for r in table] == ["w4", "w8"]
    assert list(table[0])[:8] == ["name", "model", "format", "params", "best_val_acc",
                                  "test_acc", "epochs", "seconds_per_epoch"]
    assert all(float(r["seconds_per_epoch"]) > 0 for r in table)
    assert all(r["model"] == "resnet20" and r["format"] == "srgb" and r["epochs"] == "2"
               for r in table)
    assert int(table[0]["params"]) < int(table[1]["params"])
    assert {"clean_acc", "rotate30_acc", "combined_acc"} <= set(table[0])
    assert "mean_corruption_acc" not in table[0]
    assert "| w8 | resnet20 | srgb |" in (out / "compare.md").read_text()
    assert (out / "runs" / "w4" / "result.json").is_file()
    if not report_available():
        pytest.skip("reslab.report is not importable yet")
    assert (out / "plots" / "overlaid_curves.png").stat().st_size > 0
    assert (out / "report.html").stat().st_size > 0


def test_rerun_reuses_finished_runs(compared, no_training, cli):
    study, out, rows = compared
    before = (out / "compare.csv").read_text()
    code, stdout, err = cli("compare", study, "--out", out)
    assert code == 0, err
    assert "reused" in stdout and "training into" not in stdout
    assert (out / "compare.csv").read_text() == before
    assert "w4" in stdout and "clean_acc" in stdout


def test_run_directory_entry_is_read_not_trained(compared, no_training, tmp_path):
    _, out, rows = compared
    study = write_study(tmp_path / "s.yaml", runs=[str(out / "runs" / "w8")])
    got = run_compare(study, tmp_path / "out", log=lambda _: None)
    assert got[0]["test_acc"] == rows[1]["test_acc"] and got[0]["name"] == "w8"
    assert (tmp_path / "out" / "runs" / "w8" / "metrics.jsonl").is_file()


def test_runs_from_different_environments_are_named_in_one_warning(compared, no_training,
                                                                   tmp_path, cli):
    _, out, _ = compared
    for name in ("w4", "w8"):
        shutil.copytree(out / "runs" / name, tmp_path / name)
    env = json.loads((tmp_path / "w8" / "env.json").read_text())
    (tmp_path / "w8" / "env.json").write_text(json.dumps({**env, "threads": 99}))
    study = write_study(tmp_path / "s.yaml", runs=[str(tmp_path / "w4"), str(tmp_path / "w8")])
    code, _, err = cli("compare", study, "--out", tmp_path / "out")
    assert code == 0, err
    lines = err.splitlines()
    at = lines.index("reslab compare: warning: these runs ran in different environments "
                     "(times are not comparable):")
    assert lines[at + 1].startswith("  threads differs: ") and "99 (w8)" in lines[at + 1]


def test_interrupted_run_is_resumed(compared, monkeypatch, tmp_path):
    _, out, _ = compared
    shutil.copytree(out / "runs" / "w4", tmp_path / "runs" / "w4")
    (tmp_path / "runs" / "w4" / "result.json").unlink()
    calls = []
    monkeypatch.setattr(runner, "run_training", lambda *a, **k: calls.append(k))
    entry = Entry("w4", load_compare(compared[0]).entries[0].cfg)
    (spec,) = entry_specs(entry, CompareDir(tmp_path), None)
    assert run_one(spec, quiet=True).status == "resumed"
    assert [c["resume"] for c in calls] == [tmp_path / "runs" / "w4"]


@pytest.mark.parametrize("name", ["digits-two-models.yaml", "resnet34-vs-vgg16.yaml"])
def test_examples_validate(name):
    study = load_compare(EXAMPLES / name)
    assert len(study.entries) >= 2
    assert len({e.name for e in study.entries}) == len(study.entries)
    assert all(e.cfg.train.seed == 0 and e.cfg.data.split_seed == 0 for e in study.entries)
    if name.startswith("resnet34"):
        assert {e.cfg.model.arch for e in study.entries} == {"tv:resnet34", "tv:vgg16"}
        assert {e.cfg.data.format for e in study.entries} == {"srgb", "linear", "log"}


def test_resnet34_arms_match_the_format_study_configs():
    entries = {e.name: e.cfg for e in load_compare(EXAMPLES / "resnet34-vs-vgg16.yaml").entries}
    for fmt in ("jpeg", "linear", "log"):
        own = load_config(EXAMPLES.parent / "format-study" / f"{fmt}.yaml")
        assert entries[f"resnet34-{fmt}"].model_copy(update={"name": own.name}) == own
        vgg = entries[f"vgg16-{fmt}"]
        assert vgg.data == own.data and vgg.train == own.train


def test_config_paths_names_and_duplicates(tmp_path):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "small.yaml").write_text(yaml.safe_dump(digits(None, 4)))
    study = write_study(tmp_path / "s.yaml", overrides=["train.epochs=1"],
                        runs=["cfgs/small.yaml", "cfgs/small.yaml", digits("tv:x y", 4)])
    entries = load_compare(study).entries
    assert [e.name for e in entries] == ["small", "small-2", "tv-x-y"]
    assert all(e.cfg.train.epochs == 1 for e in entries)


@pytest.mark.parametrize("study, message", [
    ({"runs": [{}], "x": 1}, "unknown key 'x'"),
    ({"runs": []}, "runs"),
    ({"runs": ["missing.yaml"]}, "runs[0]: "),
    ({"runs": [{"model": {"archh": "resnet20"}}]}, "runs[0]: unknown key 'model.archh'"),
    ({"runs": [3]}, "runs[0]: expected a config path"),
    ({"runs": [{}], "robustness": "some"}, "robustness"),
])
def test_bad_study_is_one_line_error(tmp_path, study, message):
    with pytest.raises(ReslabError) as err:
        load_compare(write_study(tmp_path / "s.yaml", **study))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_study_exits_2(tmp_path, cli):
    code, _, err = cli("compare", write_study(tmp_path / "s.yaml", runs=[], name="x"))
    assert code == 2 and err.startswith("reslab compare: error:")
