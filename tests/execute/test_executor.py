"""The run executor: the same tables with 1 or 2 workers, copies that share the work, a killed
worker's run resumed, one worker per (faked) GPU."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reslab.errors import ReslabError
from reslab.execute import ExecOptions
from reslab.execute.slots import worker_slots
from reslab.runs.claim import read_holder
from reslab.utils import read_csv, read_jsonl


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


TIMING = {"seconds_per_epoch", "seconds"}


def table(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_csv(path)]


@pytest.fixture
def compare_file(fast_config, tmp_path, monkeypatch):
    """2 entries x 2 seeds on digits, 2 epochs each."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # same arithmetic in-process and in workers
    runs = []
    for width in (4, 8):
        cfg = fast_config(data={"max_per_class": 15}, model={"width": width})
        runs.append({"name": f"w{width}", **cfg})
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"runs": runs, "repeats": 2}))
    return path


def run_cli(*args, cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reslab", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **popen)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.jsonl"))


def test_two_workers_write_the_same_tables_as_one(compare_file, tmp_path, cli):
    assert cli("compare", compare_file, "--out", tmp_path / "one", "--quiet")[0] == 0
    code, out, err = cli("compare", compare_file, "--out", tmp_path / "two", "--quiet",
                         "--workers", "2")
    assert code == 0, err
    assert table(tmp_path / "two" / "compare.csv") == table(tmp_path / "one" / "compare.csv")
    assert table(tmp_path / "two" / "significance.csv") == \
        table(tmp_path / "one" / "significance.csv")
    for run in run_dirs(tmp_path / "one"):
        twin = tmp_path / "two" / run.relative_to(tmp_path / "one")
        assert strip_times(read_jsonl(twin / "metrics.jsonl")) == \
            strip_times(read_jsonl(run / "metrics.jsonl"))
    assert "w8/seed-1: trained" in out  # the workers' outcomes, one line per run


@pytest.mark.parametrize("command", ["compare", "repeats"])
def test_two_copies_started_together_train_each_run_once(command, compare_file, fast_config,
                                                         tmp_path):
    if command == "compare":
        args = ["compare", compare_file, "--out", tmp_path / "out"]
    else:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(fast_config(data={"max_per_class": 15})))
        args = ["train", cfg, "--repeats", "3", "--out", tmp_path / "out"]
    copies = [run_cli(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [c.communicate(timeout=600) for c in copies]
    assert [c.returncode for c in copies] == [0, 0], outputs
    runs = run_dirs(tmp_path / "out")
    assert len(runs) == (4 if command == "compare" else 3)
    logs = "".join(out + err for out, err in outputs)
    for run in runs:  # trained once: by one copy, from scratch, every epoch once
        assert logs.count(f"training into {run}") == 1, logs
        assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
        assert "earlier" not in yaml.safe_load((run / "env.json").read_text())
        assert read_holder(run) is None  # every claim released


def test_a_killed_worker_s_run_is_resumed_and_ends_as_an_uninterrupted_run(fast_config,
                                                                           tmp_path):
    cfg = fast_config(data={"max_per_class": 30}, train={"epochs": 6})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    straight = run_cli("train", path, "--out", tmp_path / "straight", "--quiet", cwd=tmp_path)
    pool = run_cli("train", path, "--repeats", "1", "--workers", "2", "--out", tmp_path / "pool",
                   cwd=tmp_path)
    run = tmp_path / "pool" / "seed-0"
    deadline = time.monotonic() + 300
    while not ((run / "last.pt").is_file() and read_holder(run)):
        assert time.monotonic() < deadline and pool.poll() is None, pool.communicate()
        time.sleep(0.05)
    os.kill(read_holder(run).pid, signal.SIGKILL)  # the worker training it
    out, err = pool.communicate(timeout=600)
    assert pool.returncode == 0, err
    assert "killed by signal 9 (SIGKILL); retrying" in err
    assert straight.wait(timeout=600) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    assert strip_times(rows) == strip_times(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    assert yaml.safe_load((run / "env.json").read_text())["earlier"]  # it was resumed


def test_each_run_records_its_own_worker_s_gpu(compare_file, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("RESLAB_FAKE_GPU_COUNT", "2")
    code, out, err = cli("compare", compare_file, "--out", tmp_path / "out", "--quiet",
                         "--gpus", "0,1")
    assert code == 0, err
    seen = {}
    for run in run_dirs(tmp_path / "out"):
        env = yaml.safe_load((run / "env.json").read_text())
        seen[run.relative_to(tmp_path / "out").as_posix()] = env["cuda_visible_devices"]
    assert set(seen.values()) == {"0", "1"}, seen
    for name, gpu in seen.items():  # the worker's own GPU, as its outcome line says
        entry, seed = name.split("/")[1:]
        assert f"{entry}/{seed}: trained (CUDA_VISIBLE_DEVICES={gpu})" in out


@pytest.mark.parametrize("options, count, expected", [
    (ExecOptions(), 0, [{}]),
    (ExecOptions(gpus=("0", "1")), 2, [{"CUDA_VISIBLE_DEVICES": "0"},
                                       {"CUDA_VISIBLE_DEVICES": "1"}]),
    (ExecOptions(gpus=("1",), runs_per_gpu=2), 2, [{"CUDA_VISIBLE_DEVICES": "1"}] * 2),
    (ExecOptions(), 2, [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]),
    (ExecOptions(), 1, [{}]),
    (ExecOptions(workers=2), 1, [{"CUDA_VISIBLE_DEVICES": "0"}] * 2),
])
def test_worker_slots(options, count, expected, monkeypatch):
    monkeypatch.setenv("RESLAB_FAKE_GPU_COUNT", str(count))
    assert worker_slots(options) == expected


def test_cpu_workers_split_the_cores(monkeypatch):
    monkeypatch.setenv("RESLAB_FAKE_GPU_COUNT", "0")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("reslab.execute.slots.available_cores", lambda: 8)
    assert worker_slots(ExecOptions(workers=4)) == [{"OMP_NUM_THREADS": "2"}] * 4


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0,x"], "--gpus 0,x: expected distinct GPU indices separated by commas, "
                        "e.g. --gpus 0,1"),
    (["--gpus", "0,2"], "--gpus 0,2: GPU 2 does not exist (this machine shows 2 GPU(s))"),
    (["--workers", "0"], "--workers 0 / --runs-per-gpu 1: expected 1 or more"),
    (["--executor", "slurm"], "--executor slurm: expected local, ray, ray://HOST:PORT or "
                              "ray:HOST:PORT"),
])
def test_bad_executor_flags_are_one_line_before_any_work(args, message, compare_file, tmp_path,
                                                         cli, monkeypatch):
    monkeypatch.setenv("RESLAB_FAKE_GPU_COUNT", "2")
    code, _, err = cli("compare", compare_file, "--out", tmp_path / "out", *args)
    assert (code, err.strip().splitlines()[-1]) == (2, f"reslab compare: error: {message}")
    assert not run_dirs(tmp_path)


def test_a_changed_config_is_refused_naming_the_first_differing_key(compare_file, tmp_path,
                                                                    cli):
    assert cli("compare", compare_file, "--out", tmp_path / "out", "--quiet")[0] == 0
    code, _, err = cli("compare", compare_file, "--out", tmp_path / "out", "--quiet",
                       "--set", "train.lr=0.01")
    assert code == 2
    assert f"{tmp_path / 'out' / 'runs' / 'w4' / 'seed-0'} was trained with train.lr = 0.05, " \
        "the config now gives 0.01" in err


def test_a_failed_run_does_not_stop_the_others(compare_file, tmp_path, monkeypatch):
    from reslab.execute import RunSpec, execute

    bad = RunSpec("bad", {"data": {"source": "folder", "root": str(tmp_path / "nope")}},
                  str(tmp_path / "bad"))
    good = RunSpec("good", yaml.safe_load(compare_file.read_text())["runs"][0],
                   str(tmp_path / "good"))
    with pytest.raises(ReslabError, match=r"^run bad: .*nope"):
        execute([bad, good], ExecOptions(workers=2, quiet=True))
    assert (tmp_path / "good" / "result.json").is_file()


def test_a_tiny_study_with_two_workers_writes_the_tables_of_one(fast_config, tmp_path, cli,
                                                                monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = fast_config(data={"max_per_class": 12}, train={"epochs": 1})
    study = {"name": "widths", "base": base,
             "axes": {"width": {"w4": {"model.width": 4}, "w8": {"model.width": 8}}},
             "confirm": {"repeats": 2}, "robustness": {"suite": "seed", "raw": False},
             "scale": {"tiny": {"train.epochs": 1}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    for workers in ("1", "2"):
        code, _, err = cli("study", path, "--scale", "tiny", "--out", tmp_path / workers,
                           "--quiet", "--workers", workers)
        assert code == 0, err
    tables = sorted((tmp_path / "1" / "tables").glob("*.csv"))
    assert tables
    for one in tables:
        assert table(tmp_path / "2" / "tables" / one.name) == table(one), one.name
