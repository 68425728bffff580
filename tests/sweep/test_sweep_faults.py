"""A sweep survives its trials and its workers: a native crash fails one trial, a killed
worker's trial is retried, a killed parent takes its workers with it, a diverging learning
rate is a FAIL, and best.yaml retrains to its trial's value."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from optuna.trial import TrialState

from reslab.cli import main
from reslab.sweep.storage import default_url
from reslab.training import train

# A user model whose forward dereferences a null pointer when asked to: a real SIGSEGV.
CRASHY = '''
import ctypes
from torch import nn

class Crashy(nn.Module):
    def __init__(self, num_classes, in_chans, crash=False):
        super().__init__()
        self.crash = crash
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, num_classes))

    def forward(self, x):
        if self.crash and self.training:
            ctypes.string_at(0)
        return self.net(x)
'''


def test_a_native_crash_fails_its_trial_and_the_sweep_goes_on(write_sweep, tmp_path, sw, capsys):
    (tmp_path / "crashy.py").write_text(CRASHY)
    path = write_sweep(sampler="grid", base_model={"arch": f"{tmp_path / 'crashy.py'}:Crashy"},
                       space={"model.kwargs.crash": {"values": [False, True]},
                              "train.lr": {"values": [0.05]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = {r["model.kwargs.crash"]: r for r in sw.read_csv(out / "trials.csv")}
    assert rows["True"]["state"] == "FAIL"
    assert rows["True"]["reason"] == "crashed: signal 11 (SIGSEGV)"
    assert rows["False"]["state"] == "COMPLETE"
    assert (out / "best.yaml").is_file() and (out / "report.html").is_file()
    assert "crashed: signal 11" in capsys.readouterr().err
    # A crash is the trial's outcome, not a lost worker: a re-run does not retrain it.
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert len(sw.load_trials(default_url(out), "sweep")) == 2


def test_diverging_learning_rates_are_failed_trials(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="grid", space={"train.lr": {"values": [0.05, 50.0, 90.0]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = {float(r["train.lr"]): r for r in sw.read_csv(out / "trials.csv")}
    assert rows[0.05]["state"] == "COMPLETE"
    for lr in (50.0, 90.0):
        assert rows[lr]["state"] == "FAIL" and rows[lr]["reason"].startswith("diverged: epoch 1")


def test_best_yaml_retrains_to_its_trials_value(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="grid", base_train={"epochs": 2},
                       space={"train.lr": {"values": [0.05, 0.1]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    best = max((r for r in sw.read_csv(out / "trials.csv") if r["state"] == "COMPLETE"),
               key=lambda r: float(r["value"]))
    result = train(out / "best.yaml", out=tmp_path / "again", quiet=True)
    assert result["best_val_acc"] == float(best["value"])


def _wait_for_running_trial(url: str, study: str, out, proc, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before a trial could be caught running"
        try:
            running = [t for t in _trials(url, study) if t.state == TrialState.RUNNING]
        except KeyError:
            running = []
        for t in running:
            if "worker" in t.user_attrs and (out / "trials" / str(t.number)
                                             / "metrics.jsonl").is_file():
                return t
        time.sleep(0.05)
    raise AssertionError("no trial reached its first epoch in time")


def _trials(url: str, study: str):
    import optuna

    from reslab.sweep.storage import make_storage

    return optuna.load_study(study_name=study, storage=make_storage(url),
                             sampler=optuna.samplers.RandomSampler()).get_trials()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}/stat") else ""
    return ") Z " not in stat  # a zombie has exited


def test_a_killed_worker_is_retried_and_the_parent_still_writes_outputs(write_sweep, tmp_path,
                                                                       sw):
    path = write_sweep(sampler="grid", base_train={"epochs": 4}, space={
        "train.lr": {"values": [0.05, 0.1, 0.2]}})
    out = tmp_path / "out"
    url = default_url(out)
    proc = sw.start_sweep([str(path), "--out", str(out), "--workers", "2"], tmp_path,
                          tmp_path / "log")
    trial = _wait_for_running_trial(url, "sweep", out, proc)
    os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    assert proc.wait(timeout=300) == 0
    log = (tmp_path / "log").read_text()
    assert f"trial {trial.number}: worker killed by signal 9 (SIGKILL); retried as" in log
    rows = sw.read_csv(out / "trials.csv")
    killed = next(r for r in rows if r["number"] == str(trial.number))
    assert killed["state"] == "FAIL" and "retried as trial" in killed["reason"]
    done = sorted(float(r["train.lr"]) for r in rows if r["state"] == "COMPLETE")
    assert done == [0.05, 0.1, 0.2]
    assert (out / "best.yaml").is_file() and (out / "report.html").is_file()


def test_killing_the_parent_stops_its_workers(write_sweep, tmp_path, sw):
    path = write_sweep(sampler="grid", base_train={"epochs": 50}, space={
        "train.lr": {"values": [0.05, 0.1]}})
    out = tmp_path / "out"
    url = default_url(out)
    # A session of its own, so the kill below reaches the parent alone, not its group.
    proc = subprocess.Popen([sys.executable, "-m", "reslab", "sweep", str(path), "--out",
                             str(out), "--workers", "2"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        trial = _wait_for_running_trial(url, "sweep", out, proc)
        worker = int(trial.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker trained on as an orphan"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
