"""Run claims: one writer per run directory (runs/claim.py), and `train` honouring them."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reslab.runs.claim import CLAIM, RunClaim, RunClaimed, read_holder


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".claim")}


def test_a_live_claim_refuses_a_second_taker_and_release_frees_it(tmp_path):
    with RunClaim.take(tmp_path):
        holder = read_holder(tmp_path)
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        with pytest.raises(RunClaimed, match=rf"is being trained by pid {os.getpid()} on "
                                             rf"{socket.gethostname()} since 20\d\d-"):
            RunClaim.take(tmp_path)
    assert not (tmp_path / CLAIM).exists()
    RunClaim.take(tmp_path).release()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(folder: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    claim = folder / CLAIM
    claim.write_text(json.dumps({"host": host, "pid": pid, "start": time.time() - age_s,
                                 "token": "t"}))
    os.utime(claim, (time.time() - age_s, time.time() - age_s))


def test_a_dead_local_holder_is_stale_at_once(tmp_path):
    write_claim(tmp_path, socket.gethostname(), dead_pid())
    RunClaim.take(tmp_path).release()  # no grace wait


def test_a_remote_holder_is_stale_only_after_the_grace_period(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CLAIM_GRACE", "60")
    write_claim(tmp_path, "other-node", 12345, age_s=5)
    with pytest.raises(RunClaimed, match="pid 12345 on other-node"):
        RunClaim.take(tmp_path)
    write_claim(tmp_path, "other-node", 12345, age_s=61)
    RunClaim.take(tmp_path).release()


def test_a_taken_over_claim_is_noticed_by_its_old_holder(tmp_path, monkeypatch):
    import reslab.runs.claim as claim_module

    monkeypatch.setattr(claim_module, "HEARTBEAT_S", 0.05)
    claim = RunClaim.take(tmp_path)
    write_claim(tmp_path, "other-node", 1)  # someone took it over
    time.sleep(0.3)
    with pytest.raises(Exception, match="was taken over by pid 1 on other-node"):
        claim.check()
    claim.release()
    assert read_holder(tmp_path).host == "other-node"  # the new holder's claim is kept


@pytest.fixture
def held_run(fast_config, tmp_path):
    """A run of 1 epoch (finished), its config file, and a claim on it held by this process
    as a second writer would find it."""
    import reslab

    cfg = fast_config(data={"max_per_class": 10}, train={"epochs": 1})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    reslab.train(cfg, out=tmp_path / "run", quiet=True)
    (tmp_path / "run" / "result.json").unlink()  # an unfinished run, resumable
    claim = RunClaim.take(tmp_path / "run")
    yield path, tmp_path / "run"
    claim.release()


@pytest.mark.parametrize("how", ["out", "resume"])
def test_train_into_a_run_being_trained_exits_2_and_changes_nothing(held_run, cli, how):
    config, run = held_run
    before = digest(run)
    args = ["--resume", run] if how == "resume" else [config, "--out", run]
    code, _, err = cli("train", *args)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"reslab train: error: {run} is being trained by pid {os.getpid()} "
                           f"on {socket.gethostname()} since 20")
    assert "nothing was changed" in line
    assert digest(run) == before


def test_stale_temp_files_of_a_live_writer_are_left_alone(held_run, cli):
    _, run = held_run
    temp = run / ".last.pt.abc123.tmp"
    temp.write_bytes(b"in flight")
    code, _, err = cli("eval", run)
    assert code == 0, err
    assert temp.read_bytes() == b"in flight"
