"""env.json: written when training starts, kept by `eval`, extended by a resume; and the
warning helper for commands that put runs side by side."""
from __future__ import annotations

import json
import re

import pytest
import torch

import reslab
from reslab.runs.env import cpu_model, device_name
from reslab.runs.rundir import RunDir, environment_warning

CONFIG = {
    "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.15,
             "max_per_class": 30, "augment": "none"},
    "model": {"arch": "resnet20", "width": 8},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "tensorboard": False,
              "report": False, "device": "cpu", "progress": False, "threads": 1},
}
FIXED_KEYS = {"reslab", "python", "torch", "torchvision", "cuda", "cudnn", "device", "cpu",
              "cpu_isa", "threads", "os", "git", "command"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("env") / "run"
    reslab.train(CONFIG, out=out, quiet=True)
    return out


def test_training_writes_env_json_with_the_fixed_keys(run):
    env = json.loads((run / "env.json").read_text())
    assert FIXED_KEYS <= set(env)
    assert env["torch"] == torch.__version__
    assert env["cpu_isa"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["device"] == device_name("cpu", cpu_model())
    assert env["threads"] == 1 and env["world_size"] == 1  # train.threads, one process
    assert env["cuda"] is None  # trained on the CPU (a GPU is named only when used)
    if env["git"] is not None:  # a source checkout (not an installed wheel)
        assert re.fullmatch(r"[0-9a-f]{40}", env["git"]["commit"])
        assert isinstance(env["git"]["dirty"], bool)
    assert "earlier" not in env


def test_eval_leaves_env_json_alone(run, cli):
    before = (run / "env.json").read_bytes()
    code, _, err = cli("eval", run, "--json")
    assert code == 0, err
    assert (run / "env.json").read_bytes() == before


def test_resume_keeps_the_earlier_session_and_warns_when_it_differs(tmp_path, capsys):
    out = tmp_path / "run"
    reslab.train(CONFIG, out=out, quiet=True)
    first = json.loads((out / "env.json").read_text())
    moved = {**first, "threads": 64, "device": "Some Other CPU"}  # as if trained elsewhere
    (out / "env.json").write_text(json.dumps(moved))
    capsys.readouterr()
    reslab.train(resume=out, overrides=["train.epochs=2"], quiet=True)
    err = capsys.readouterr().err
    assert "resumed in another environment" in err and "threads differs" in err
    env = json.loads((out / "env.json").read_text())
    assert env["threads"] == 1 and env["earlier"] == [moved]
    reslab.train(resume=out, overrides=["train.epochs=3"], quiet=True)
    again = json.loads((out / "env.json").read_text())
    assert len(again["earlier"]) == 2 and again["earlier"][1] == moved
    assert "earlier" not in again["earlier"][0]


def test_environment_warning_names_what_differs(tmp_path):
    env = {"device": "AMD EPYC", "cpu": "AMD EPYC", "threads": 8, "torch": "2.14.1",
           "cpu_isa": {"capability": "AVX512", "flags": [], "mkldnn_bf16": True, "env": {}},
           "git": {"commit": "abc", "dirty": False}}
    runs = {}
    for name, changes in (("a", {}), ("b", {}), ("c", {"threads": 16}), ("old", None)):
        runs[name] = RunDir(tmp_path / name)
        runs[name].path.mkdir()
        if changes is not None:
            (runs[name].env).write_text(json.dumps({**env, **changes}))
    assert environment_warning({k: runs[k] for k in ("a", "b", "old")}) is None
    text = environment_warning(runs)
    lines = text.splitlines()
    assert lines[0].startswith("these runs ran in different") and "not comparable" in lines[0]
    assert lines[1:] == ["  threads differs: 8 (a, b); 16 (c)"]
