"""`reslab config` (the resolved config train runs, the defaults), `base:` in a train config,
`reslab --version` and `reslab completion`."""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess

import pytest
import torch
import yaml

from reslab.cli.config import leaf_defaults
from reslab.config import Config, load_config
from reslab.engine.machine import machine_class


def write(path, mapping) -> str:
    path.write_text(yaml.safe_dump(mapping))
    return str(path)


def test_config_prints_what_train_writes_in_config_yaml(tmp_path, cli, fast_config):
    cfg = fast_config(train={"epochs": 1})
    write(tmp_path / "base.yaml", {"data": cfg["data"], "model": cfg["model"]})
    sets = {"train.batch_size": 32, "model.width": 4}
    child = write(tmp_path / "child.yaml", {
        "base": "base.yaml", "train": cfg["train"],
        "machine": {"cpu-fp32": sets, "cpu-bf16": sets}})
    here = machine_class(torch.device("cpu"))
    code, printed, err = cli("config", child, "--set", "train.lr=0.02", "--machine", here)
    assert code == 0, err
    code, _, err = cli("train", child, "--set", "train.lr=0.02", "--out", tmp_path / "run",
                       "--quiet")
    assert code == 0, err
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert yaml.safe_load(printed) == yaml.safe_load(written)
    assert Config.model_validate(yaml.safe_load(printed)) == load_config(tmp_path / "run" /
                                                                          "config.yaml")
    assert yaml.safe_load(printed)["train"]["batch_size"] == 32


def test_config_machine_class_chooses_the_set(tmp_path, cli, fast_config):
    path = write(tmp_path / "c.yaml", {**fast_config(), "machine": {
        "cuda": {"train.batch_size": 1024}, "cpu-fp32": {"train.batch_size": 16}}})
    _, out, _ = cli("config", path, "--machine", "cuda")
    assert yaml.safe_load(out)["train"]["batch_size"] == 1024
    assert yaml.safe_load(out)["machine"] == {"cuda": {"train.batch_size": 1024}}
    _, out, _ = cli("config", path, "--machine", "cpu-bf16")
    assert yaml.safe_load(out)["train"]["batch_size"] == 64
    assert yaml.safe_load(out)["machine"] == {}


def test_base_merges_section_by_section_relative_to_the_file(tmp_path, fast_config):
    (tmp_path / "shared").mkdir()
    write(tmp_path / "shared" / "base.yaml", fast_config(train={"lr": 0.3, "epochs": 7}))
    (tmp_path / "exp").mkdir()
    child = write(tmp_path / "exp" / "c.yaml", {"base": "../shared/base.yaml",
                                                "train": {"lr": 0.01}})
    cfg = load_config(child, ["train.batch_size=8"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (0.01, 7, 8)
    assert cfg.model.width == 8


def test_base_user_model_stays_relative_to_the_base_file(tmp_path):
    (tmp_path / "models").mkdir()
    write(tmp_path / "models" / "base.yaml", {"model": {"arch": "net.py:Net"}})
    child = write(tmp_path / "c.yaml", {"base": "models/base.yaml"})
    assert load_config(child).model.arch == f"{(tmp_path / 'models' / 'net.py').resolve()}:Net"


def test_base_cycle_is_one_line(tmp_path, cli):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    code, out, err = cli("config", tmp_path / "a.yaml")
    a, b = (tmp_path / "a.yaml").resolve(), (tmp_path / "b.yaml").resolve()
    assert code == 2 and out == ""
    assert err == f"reslab config: error: {b}: base: cycle {a} -> {b} -> {a}\n"


def test_base_missing_file_is_one_line(tmp_path, cli):
    path = write(tmp_path / "a.yaml", {"base": "nope.yaml"})
    code, _, err = cli("config", path)
    assert code == 2
    assert err == (f"reslab config: error: {path}: base: config file "
                   f"{(tmp_path / 'nope.yaml').resolve()} not found\n")


def test_defaults_lists_every_key_with_its_default_and_meaning(cli):
    code, out, _ = cli("config", "--defaults")
    assert code == 0
    lines = {line.split(" = ")[0]: line for line in out.splitlines()}
    assert list(lines)[:2] == ["name", "base"]
    for key, default in leaf_defaults(Config):
        assert key in lines, key
        value, _, meaning = lines[key].partition(" = ")[2].partition("# ")
        assert yaml.safe_load(value) == default and meaning.strip(), key
    assert lines["train.lr"].startswith("train.lr = 0.1 ")
    assert "data.mixup.alpha" in lines and "train.ema.decay" in lines


def test_version_line(capsys):
    from reslab.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"reslab {importlib.metadata.version('reslab')}\n"


def test_bash_completion_script(cli, tmp_path):
    code, out, _ = cli("completion", "bash")
    assert code == 0
    for word in ("reslab", "train", "sweep", "completion", "--set", "--machine", "cpu-bf16"):
        assert word in out
    script = tmp_path / "reslab.bash"
    script.write_text(out)
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", script]).returncode == 0


def test_zsh_completion_script(cli):
    code, out, _ = cli("completion", "zsh")
    assert code == 0 and out.startswith("#compdef reslab")
    assert "--defaults" in out and "robustness" in out
