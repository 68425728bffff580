"""Sweep test helpers: tiny digits sweep files, a throwaway PostgreSQL server, storage polling."""
from __future__ import annotations

import csv
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

# One thread per run: the test machine's cores are shared, and oversubscribed OpenMP threads
# make a 0.3 s digits epoch take seconds.
BASE = {
    "data": {"source": "digits", "val_fraction": 0.2, "augment": "none"},
    "model": {"arch": "resnet20", "width": 4},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "tensorboard": False, "report": False,
              "device": "cpu", "progress": False, "threads": 1},
}


@pytest.fixture
def write_sweep(tmp_path):
    """write_sweep(space=..., sampler=..., base_train={...}, **keys) -> path of SWEEP.yaml."""

    def write(name: str = "sweep", base_train: dict | None = None,
              base_model: dict | None = None, **keys) -> Path:
        base = {k: dict(v) for k, v in BASE.items()}
        base["train"].update(base_train or {})
        base["model"].update(base_model or {})
        spec = {"base": base, "heartbeat": {"interval": 1, "grace": 3}, **keys}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_trials(url: str, study: str):
    """All trials of a study, read through the same storage code the sweep uses."""
    import optuna

    from reslab.sweep.storage import make_storage

    return optuna.load_study(study_name=study, storage=make_storage(url),
                             sampler=optuna.samplers.RandomSampler()).get_trials()


def start_sweep(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """`reslab sweep ARGS` in its own process group (so the test can SIGKILL all of it)."""
    return subprocess.Popen([sys.executable, "-m", "reslab", "sweep", *args], cwd=cwd,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_mid_trial(proc: subprocess.Popen, url: str, study: str, sweep_dir: Path,
                   timeout: float = 90.0) -> int:
    """Wait until a trial is RUNNING and has trained an epoch, then SIGKILL the process group.
    Returns the killed trial's number."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before a trial could be killed"
        try:
            running = [t for t in load_trials(url, study) if t.state == TrialState.RUNNING]
        except KeyError:  # study not created yet
            running = []
        if any((sweep_dir / "trials" / str(t.number) / "metrics.jsonl").is_file()
               for t in running):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            # Read the victim after the kill: on a loaded machine the trial seen above may have
            # finished (and the next one started) between the query and the signal.
            running = [t.number for t in load_trials(url, study) if t.state == TrialState.RUNNING]
            assert len(running) == 1, f"expected one RUNNING trial after the kill, got {running}"
            return running[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no trial reached its first epoch in time")


def kill_and_resume(write_sweep, tmp_path: Path, url: str | None, study: str) -> None:
    """Start a 1-worker grid sweep, SIGKILL it mid-trial, re-run the same command: the killed
    trial is failed by the heartbeat and retried, and every point completes exactly once."""
    from optuna.trial import TrialState

    from reslab.cli import main
    from reslab.sweep.storage import default_url

    path = write_sweep(name=study, sampler="grid", base_train={"epochs": 3}, space={
        "train.lr": {"values": [0.05, 0.1]}, "model.width": {"values": [8]}})
    out = tmp_path / f"out-{study}"
    args = [str(path), "--out", str(out), "--workers", "1"] + (["--storage", url] if url else [])
    url = url or default_url(out)
    proc = start_sweep(args, tmp_path, tmp_path / f"{study}.log")
    killed = kill_mid_trial(proc, url, study, out)
    states = {t.number: t.state for t in load_trials(url, study)}
    assert states[killed] == TrialState.RUNNING  # nobody told the study: only the heartbeat can

    assert main(["sweep", *args]) == 0  # waits out the grace period, then retries the trial
    trials = load_trials(url, study)
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed)
    assert retry.state == TrialState.COMPLETE and retry.params == by_number[killed].params
    done = [json.dumps(t.params, sort_keys=True) for t in trials
            if t.state == TrialState.COMPLETE]
    assert sorted(done) == sorted({json.dumps({"model.width": 8, "train.lr": lr},
                                              sort_keys=True) for lr in (0.05, 0.1)})
    assert [t for t in trials if t.state not in (TrialState.COMPLETE, TrialState.FAIL)] == []
    rows = {r["number"]: r for r in read_csv(out / "trials.csv")}
    assert rows[str(killed)]["state"] == "FAIL"
    assert f"retried as trial {retry.number}" in rows[str(killed)]["reason"]
    result = json.loads((out / "trials" / str(retry.number) / "result.json").read_text())
    assert result["epochs_run"] == 3


@pytest.fixture
def sw():
    """The helpers above, for tests (conftest modules are not importable by name)."""
    return SimpleNamespace(read_csv=read_csv, load_trials=load_trials, start_sweep=start_sweep,
                           kill_mid_trial=kill_mid_trial, kill_and_resume=kill_and_resume)


# --------------------------------------------------------------------------- PostgreSQL
def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL cluster on a free loopback port with database `reslab`."""
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install "
                        "psycopg2-binary)")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                    "/usr/lib/postgresql/*/bin; apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
    # Not under pytest's tmp dir: that is private to the current user (mode 0700).
    root = Path(tempfile.mkdtemp(prefix="reslab-pg-"))
    if os.geteuid() == 0:
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()
    run = lambda *cmd: subprocess.run(_as_server_user([str(c) for c in cmd]),  # noqa: E731
                                      check=True, capture_output=True, text=True)
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync")
        opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-o", opts, "-w",
            "-t", "60", "start")
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {err.stderr or err.stdout}")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE reslab")
        conn.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/reslab"
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
