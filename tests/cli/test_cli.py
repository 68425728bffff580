import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sets, count", [
    (["model.arch=resnet18", "model.width=42"], "4,815,940"),
    (["model.arch=resnet18", "model.width=64"], "11,173,962"),
    (["model.arch=resnet20"], "272,474"),
    (["model.arch=resnet20", "model.shortcut=zeropad"], "269,722"),
])
def test_summary_counts(cli, sets, count):
    args = ["summary", "--set", "data.source=cifar10", "--set", "model.num_classes=10"]
    for s in sets:
        args += ["--set", s]
    code, out, err = cli(*args)
    assert code == 0, err
    assert f"total params: {count}" in out
    assert "FLOPs per image" in out and "Conv2d" in out and "Output Shape" in out


def test_summary_reports_budget_breach(cli):
    code, out, _ = cli("summary", "--set", "model.arch=resnet18", "--set", "model.width=64",
                       "--set", "model.max_params=5000000", "--set", "model.num_classes=10",
                       "--set", "data.source=cifar10")
    assert code == 2 and "OVER model.max_params" in out


def write_config(tmp_path, cfg, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_cli_with_overrides(tmp_path, cli, fast_config):
    path = write_config(tmp_path, fast_config())
    code, out, err = cli("train", path, "--set", "train.epochs=1", "--out", tmp_path / "run")
    assert code == 0, err
    assert "Epoch 1, Train loss" in out and "Run directory" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["optimizer"] == "sgd"


def test_train_refuses_to_overwrite_a_run(tmp_path, cli, fast_config):
    path = write_config(tmp_path, fast_config(train={"epochs": 1}))
    assert cli("train", path, "--out", tmp_path / "run")[0] == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    code, _, err = cli("train", path, "--out", tmp_path / "run")
    assert code == 2 and "--resume" in err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("sets, message", [
    (["train.lr=-0.1"], "train.lr = -0.1: Input should be greater than 0"),
    (["train.optimiser=sgd"], "unknown key 'train.optimiser'"),
    (["train.batch_size=many"], "train.batch_size = 'many'"),
    (["model.arch=resnet18", "model.width=64", "model.max_params=5000000"],
     "resnet18 (width 64) has 11,172,810 parameters, over the budget of 5,000,000"),
    (["data.source=folder", "data.root=/nonexistent/dir"], "/nonexistent/dir does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, cli, fast_config, sets,
                                                          message):
    path = write_config(tmp_path, fast_config())
    args = ["train", path, "--out", tmp_path / "run"]
    for s in sets:
        args += ["--set", s]
    code, _, err = cli(*args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reslab", "train", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    missing = tmp_path / "nope.yaml"
    assert proc.stderr.strip() == f"reslab train: error: config file {missing} not found"


def test_demo_reaches_95_percent(tmp_path, cli):
    code, out, err = cli("demo", "--out", tmp_path / "demo")
    assert code == 0, err
    result = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert result["test_acc"] >= 0.95
    assert f"held-out test accuracy {result['test_acc']:.4f}" in out
    demo = tmp_path / "demo"
    assert f"report {demo / 'report.html'}" in out
    # The miniature study: robustness, a 2x2 grid sweep, reports for both.
    assert (demo / "robustness.csv").read_text().splitlines()[1].startswith("clean,0,")
    assert len((demo / "sweep" / "trials.csv").read_text().splitlines()) == 5
    html = (demo / "report.html").read_text()
    assert "Robustness" in html and (demo / "sweep" / "report.html").exists()


def test_packaged_demo_config_matches_the_example():
    packaged = (REPO / "src" / "reslab" / "demo.yaml").read_text()
    assert packaged == (REPO / "examples" / "demo.yaml").read_text()
