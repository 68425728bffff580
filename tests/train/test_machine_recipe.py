"""Machine classes (`machine:` override sets chosen by the hardware) and `train.eval_every`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import reslab
from reslab.config import MACHINE_CLASSES, load_config
from reslab.engine.device import resolve_device
from reslab.engine.machine import apply_machine, machine_class
from reslab.errors import ReslabError
from reslab.runs.rundir import RunDir
from reslab.utils import read_jsonl

SRC = Path(__file__).resolve().parents[2] / "src"
RECIPE = Path(__file__).resolve().parents[2] / "examples" / "cifar10-fast.yaml"
# Different values per class, so the config a run records says which class it took.
SETS = {"cpu-fp32": {"model.width": 4, "train.batch_size": 32},
        "cpu-bf16": {"model.width": 6, "train.batch_size": 48},
        "cuda": {"model.width": 10, "train.batch_size": 40}}


def native_bf16(monkeypatch, native: bool) -> None:
    """What oneDNN reports: an AVX512-BF16/AMX CPU (True) or an AVX2 one (False)."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)


@pytest.mark.parametrize("native, expected", [(True, "cpu-bf16"), (False, "cpu-fp32")])
def test_cpu_class_follows_the_native_bf16_probe(monkeypatch, native, expected):
    native_bf16(monkeypatch, native)
    assert machine_class(torch.device("cpu")) == expected


def test_cuda_class_when_the_device_resolves_to_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert machine_class(resolve_device("auto")) == "cuda"
    assert machine_class(torch.device("cuda", 1)) == "cuda"
    assert machine_class(torch.device("mps")) is None


def test_avx2_kernels_make_any_cpu_cpu_fp32():
    # The real probe, not a patch: oneDNN capped at AVX2 reports no native bf16.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
           "PYTHONPATH": str(SRC)}
    code = "import torch; from reslab.engine.machine import machine_class; " \
           "print(machine_class(torch.device('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "cpu-fp32"


@pytest.mark.parametrize("native, name", [(False, "cpu-fp32"), (True, "cpu-bf16")])
def test_the_class_set_is_applied_and_set_keys_win(monkeypatch, fast_config, native, name):
    native_bf16(monkeypatch, native)
    cfg = load_config({**fast_config(), "machine": SETS}, ["train.batch_size=16"])
    out, line = apply_machine(cfg, torch.device("cpu"), ["train.batch_size=16"])
    assert out.model.width == SETS[name]["model.width"] and out.train.batch_size == 16
    assert out.machine == {name: {"model.width": SETS[name]["model.width"]}}
    assert line == (f"machine class {name}: applied model.width={SETS[name]['model.width']} "
                    f"(kept from --set: train.batch_size)")
    assert cfg.model.width == 8  # the input config is left as it was


def test_no_machine_mapping_changes_nothing(fast_config):
    cfg = load_config(fast_config())
    assert apply_machine(cfg, torch.device("cpu"), []) == (cfg, None)


def test_a_device_without_a_class_applies_nothing(fast_config):
    cfg = load_config({**fast_config(), "machine": SETS})
    out, line = apply_machine(cfg, torch.device("mps"), [])
    assert out.model.width == 8 and out.machine == {} and "has no machine class" in line


def test_a_run_records_what_its_class_applied_and_resume_keeps_it(tmp_path, fast_config,
                                                                  monkeypatch, capsys):
    native_bf16(monkeypatch, False)
    config = {**fast_config(train={"epochs": 1}), "machine": SETS}
    reslab.train(config, out=tmp_path / "r")
    assert "machine class cpu-fp32: applied model.width=4, train.batch_size=32" in \
        capsys.readouterr().out
    recorded = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert recorded["model"]["width"] == 4 and recorded["train"]["batch_size"] == 32
    assert recorded["machine"] == {"cpu-fp32": SETS["cpu-fp32"]}
    # Resumed on a machine of another class: the run goes on with what it started with.
    native_bf16(monkeypatch, True)
    result = reslab.train(resume=tmp_path / "r", overrides=["train.epochs=2"])
    assert result["epochs_run"] == 2 and "machine class" not in capsys.readouterr().out
    assert RunDir(tmp_path / "r").read_config().model.width == 4
    # Training the recorded config again elsewhere reproduces what ran, too.
    again, _ = apply_machine(load_config(tmp_path / "r" / "config.yaml"), torch.device("cpu"))
    assert again.model.width == 4 and again.train.batch_size == 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_run_takes_the_cuda_set(tmp_path, fast_config):
    reslab.train({**fast_config(train={"device": "cuda", "epochs": 1}), "machine": SETS},
                 out=tmp_path / "r", quiet=True)
    cfg = RunDir(tmp_path / "r").read_config()
    assert cfg.machine == {"cuda": SETS["cuda"]} and cfg.model.width == 10


@pytest.mark.parametrize("machine, expected", [
    ({"gpu": {"train.batch_size": 8}}, "config: machine: unknown machine class 'gpu' "
                                       "(expected cpu-fp32, cpu-bf16, cuda)"),
    ({"cuda": {"train.batch_sise": 8}}, "config: machine.cuda: unknown key 'train.batch_sise'"),
    ({"cuda": {"train.batch_size": 0}}, "config: machine.cuda: train.batch_size = 0: Input "
                                        "should be greater than or equal to 1"),
    ({"cpu-fp32": {"batch_size": 8}}, "config: machine: machine.cpu-fp32: 'batch_size' is not "
                                      "a dotted data.*, model.* or train.* key"),
    ({"cuda": {"train.device": "cpu"}}, "'train.device' is not a dotted"),
    ({"cuda": ["train.batch_size=8"]}, "machine.cuda"),
])
def test_bad_classes_keys_and_values_are_one_line_errors(fast_config, machine, expected):
    with pytest.raises(ReslabError) as err:
        load_config({**fast_config(), "machine": machine})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_fast_recipe_has_every_class_with_the_same_keys():
    cfg = load_config(RECIPE)
    assert set(cfg.machine) == set(MACHINE_CLASSES)
    keys = {name: set(sets) for name, sets in cfg.machine.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1 and \
        {"model.width", "train.batch_size", "train.amp"} <= keys["cuda"]


@pytest.mark.parametrize("every, validated", [(2, [2, 4, 5]), (0, []), (1, [1, 2, 3, 4, 5])])
def test_eval_every_validates_every_nth_and_the_last_epoch(tmp_path, fast_config, every,
                                                           validated):
    result = reslab.train(fast_config(train={"epochs": 5, "eval_every": every}),
                          out=tmp_path / "r", quiet=True)
    rows = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert [r["epoch"] for r in rows if r["val_acc"] is not None] == validated
    assert all((r["test_acc"] is None) == (r["val_acc"] is None) for r in rows)
    assert result["test_acc"] is not None  # the final evaluation runs whatever eval_every


def test_eval_every_refuses_a_val_watcher(fast_config):
    with pytest.raises(ReslabError, match="the early stopping needs a validation every epoch"):
        load_config(fast_config(train={"eval_every": 2, "early_stopping": {"enabled": True}}))
    load_config(fast_config(train={"eval_every": 2, "early_stopping": {
        "enabled": True, "monitor": "train_loss"}}))  # a train metric needs no validation
