"""Run claims: one writer per run directory, on one machine or many sharing a filesystem.

A process that trains a run holds its claim, `RUN/.claim` (JSON: host, pid, start, token),
and touches the file every HEARTBEAT_S seconds while it trains. Any other process, on this
machine or another, that finds a live claim neither writes nor deletes the run: `train`
refuses in one line, the run executor takes other work and comes back later.

A claim is stale, and the run free to take over (it resumes from its last checkpoint), when
- its holder is on this host and its pid is gone (known at once: no grace wait), or
- its heartbeat is older than the grace period: GRACE_S seconds, or $RESLAB_CLAIM_GRACE
  (a holder on another host may be alive but unreachable; set the grace above the longest
  pause a healthy node can have, e.g. a slow shared filesystem).
Taking or releasing a claim happens under an flock on `RUN/.claim.lock`, so two processes
never both take one run.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReslabError
from ..utils import atomic_write_text

CLAIM = ".claim"
CLAIM_LOCK = ".claim.lock"
HEARTBEAT_S = 10.0
GRACE_S = 60.0


def grace_seconds() -> float:
    return float(os.environ.get("RESLAB_CLAIM_GRACE") or GRACE_S)


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, read from its file."""
    host: str
    pid: int
    start: float
    token: str
    heartbeat: float  # the file's mtime

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.start))
        return f"pid {self.pid} on {self.host} since {since}"

    def is_stale(self, now: float | None = None) -> bool:
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return True
        return (now or time.time()) - self.heartbeat > grace_seconds()


class RunClaimed(ReslabError):
    """The run is being trained by another live process."""

    def __init__(self, path: Path, holder: Holder):
        super().__init__(f"{path} is being trained by {holder.describe()}; nothing was "
                         "changed (wait for it, or let `reslab compare/study/train --repeats` "
                         "share the work)")
        self.path, self.holder = path, holder


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM  # alive, another user's
    return True


def read_holder(path: Path) -> Holder | None:
    """The claim in run directory `path`, or None (none, or one torn by a crash: free)."""
    claim = Path(path) / CLAIM
    try:
        data, mtime = json.loads(claim.read_text()), claim.stat().st_mtime
        return Holder(str(data["host"]), int(data["pid"]), float(data["start"]),
                      str(data["token"]), mtime)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _locked(path: Path):
    with open(Path(path) / CLAIM_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RunClaim:
    """This process's claim on a run directory, with its heartbeat thread.

    `RunClaim.take(path)` -> the claim, or raises RunClaimed; use as a context manager (or
    call release()). `lost` turns True if another process took the run over because this
    one looked stale (a frozen process, a partitioned node): the trainer then stops."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = Path(path), token
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def take(path: str | Path) -> RunClaim:
        path = Path(path)
        with _locked(path):
            holder = read_holder(path)
            if holder is not None and not holder.is_stale():
                raise RunClaimed(path, holder)
            token = uuid.uuid4().hex
            atomic_write_text(path / CLAIM, json.dumps(
                {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time(),
                 "token": token}) + "\n")
        claim = RunClaim(path, token)
        claim._thread = threading.Thread(target=claim._beat, daemon=True,
                                         name=f"claim-{path.name}")
        claim._thread.start()
        return claim

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = read_holder(self.path)
            if holder is None or holder.token != self.token:
                self.lost = True
                return
            try:
                os.utime(self.path / CLAIM)
            except OSError:
                pass  # a passing filesystem error; the next beat retries

    def check(self) -> None:
        """Raise if the run was taken over (called between epochs)."""
        if self.lost:
            holder = read_holder(self.path)
            who = holder.describe() if holder else "another process"
            raise ReslabError(f"{self.path} was taken over by {who} while this process "
                              f"trained it (no heartbeat for over {grace_seconds():g} s); "
                              "this process stops and leaves the run to it")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _locked(self.path):
            holder = read_holder(self.path)
            if holder is not None and holder.token == self.token:
                (self.path / CLAIM).unlink(missing_ok=True)

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
