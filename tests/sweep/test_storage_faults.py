"""Storage faults: URLs are printed redacted in every form, and the database going away
mid-sweep ends it with one line per process (exit 2), no traceback, nothing lost: the same
command resumes once the database is back.

The end-to-end test needs the sweep wiring of `storage_errors` / `is_storage_failure` in
sweep/workers.py (worker_main, run_one), sweep/monitor.py (Monitor._poll) and sweep/run.py
(run_sweep)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc as sa_exc
from optuna.trial import TrialState

from reslab.cli import main
from reslab.errors import ReslabError
from reslab.sweep.storage import (
    StorageLostError,
    is_storage_failure,
    make_storage,
    redact_text,
    redact_url,
    storage_errors,
)

SECRETS = ("hunter2", "s3cr@t", "tok123", "k3y456", "pw0rd9")


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg2://bob:hunter2@db.example:5432/study",
     "postgresql+psycopg2://bob:***@db.example:5432/study"),
    ("postgresql://bob:s3cr@t@db.example/study", "postgresql://bob:***@db.example/study"),
    ("postgresql://bob@db.example/study?password=hunter2&sslmode=require",
     "postgresql://bob@db.example/study?password=***&sslmode=require"),
    ("mysql+pymysql://db.example/s?user=bob&PASS=hunter2;pwd=pw0rd9",
     "mysql+pymysql://db.example/s?user=bob&PASS=***;pwd=***"),
    ("postgresql://h/s?sslpassword=hunter2&auth_token=tok123&api_key=k3y456&passwd=pw0rd9",
     "postgresql://h/s?sslpassword=***&auth_token=***&api_key=***&passwd=***"),
    ("postgresql://bob:%40hunter2@h/s", "postgresql://bob:***@h/s"),
    ("sqlite:////home/ann@lab/sweeps/study.db", "sqlite:////home/ann@lab/sweeps/study.db"),
    ("journal:/tmp/study.log", "journal:/tmp/study.log"),
    ("mysql://root@localhost/optuna", "mysql://root@localhost/optuna"),
])
def test_redact_url_hides_every_credential_form(url, shown):
    assert redact_url(url) == shown
    assert not any(s in redact_url(url) for s in SECRETS)


def test_redact_text_hides_the_url_and_echoed_credentials():
    url = "postgresql://bob:s3cr@t@h/s?password=hunter2"
    text = f"cannot connect to {url}: dsn 'password=hunter2' rejected for s3cr@t"
    out = redact_text(text, url)
    assert not any(s in out for s in SECRETS)
    assert "postgresql://bob:***@h/s?password=***" in out


def test_cannot_open_message_is_redacted(tmp_path):
    port = _free_port()  # nothing listens there: the connection is refused at once
    url = f"postgresql+psycopg2://bob:hunter2@127.0.0.1:{port}/s?password=hunter2&sslmode=disable"
    pytest.importorskip("psycopg2")
    with pytest.raises(ReslabError) as info:
        make_storage(url)
    message = str(info.value)
    assert "cannot open" in message and "\n" not in message
    assert "hunter2" not in message and "bob:***@127.0.0.1" in message


def _wrapped_operational_error() -> Exception:
    """What Optuna raises when the server is gone: StorageInternalError from OperationalError."""
    orig = Exception('connection to server at "127.0.0.1" failed: Connection refused\n\tIs it up?')
    try:
        try:
            raise sa_exc.OperationalError("SELECT 1", {}, orig)
        except sa_exc.OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the "
                                                         "commit.") from err
    except optuna.exceptions.StorageInternalError as err:
        return err


def test_storage_errors_turns_the_database_going_away_into_one_line():
    url = "postgresql://bob:hunter2@127.0.0.1/s"
    with pytest.raises(StorageLostError) as info, storage_errors(url):
        raise _wrapped_operational_error()
    message = str(info.value)
    assert message == ("--storage postgresql://bob:***@127.0.0.1/s: the database went away "
                       '(connection to server at "127.0.0.1" failed: Connection refused); '
                       "re-run the same command to resume once it is back")
    assert info.value.exit_code == 2


def test_storage_errors_lets_other_errors_through():
    assert is_storage_failure(_wrapped_operational_error())
    for err in (ValueError("a bug"), sa_exc.IntegrityError("INSERT", {}, Exception("dup")),
                ReslabError("bad input")):
        assert not is_storage_failure(err)
        with pytest.raises(type(err)) as info, storage_errors("sqlite:///x.db"):
            raise err
        assert info.value is err


def test_an_unreadable_sqlite_file_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = make_storage(url)
    optuna.create_study(study_name="s", storage=storage)
    storage.engine.dispose()
    (tmp_path / "study.db").write_bytes(b"\0garbage, not a database" * 100)
    with pytest.raises(StorageLostError, match="the database went away .*not a database"), \
            storage_errors(url):
        storage.get_all_studies()


# --------------------------------------------------------------------------- end to end
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class Server:
    """A private PostgreSQL cluster that a test may stop and start again (the session's
    `postgres_url` server must stay up for the other tests)."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir, self.root, self.port = bindir, root, _free_port()
        self.data = root / "data"

    def run(self, *cmd) -> None:
        cmd = [str(c) for c in cmd]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        self.run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.root / "server.log",
                 "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "stop")


@pytest.fixture
def pg_server():
    pytest.importorskip("psycopg2", reason="psycopg2 not installed")
    bindir = _pg_bin()
    if bindir is None or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) or runuser not found")
    root = Path(tempfile.mkdtemp(prefix="reslab-pgfault-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    server = Server(bindir, root)
    try:
        server.run(bindir / "initdb", "-D", server.data, "-U", "postgres", "--auth=trust",
                   "--no-sync")
        server.start()
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres",
                                dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE reslab")
        conn.close()
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--"] * (os.geteuid() == 0)
                       + [str(bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate",
                          "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_a_training_trial(proc, url: str, study: str, sweep_dir: Path, sw) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before the database could be stopped"
        try:
            running = [t for t in sw.load_trials(url, study) if t.state == TrialState.RUNNING]
        except KeyError:  # study not created yet
            running = []
        if any((sweep_dir / "trials" / str(t.number) / "metrics.jsonl").is_file()
               for t in running):
            return
        time.sleep(0.1)
    pytest.fail("no trial reached its first epoch in time")


def test_database_going_away_mid_sweep_is_one_line_per_process_and_resumes(
        pg_server, write_sweep, tmp_path, sw):
    url = (f"postgresql+psycopg2://postgres:hunter2@127.0.0.1:{pg_server.port}/reslab"
           "?password=hunter2")
    path = write_sweep(name="pgdown", sampler="grid", base_train={"epochs": 10}, space={
        "train.lr": {"values": [0.05, 0.1]}})
    out, log = tmp_path / "out", tmp_path / "sweep.log"
    args = [str(path), "--out", str(out), "--workers", "2", "--storage", url]
    proc = sw.start_sweep(args, tmp_path, log)
    try:
        _wait_for_a_training_trial(proc, url, "pgdown", out, sw)
        pg_server.stop()
        assert proc.wait(timeout=120) == 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    text = log.read_text()
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert "Traceback" not in text and "hunter2" not in text, text
    assert 1 <= len(errors) <= 3, text  # at most one line per process: 2 workers + the parent
    assert "the database went away" in text and "postgres:***@127.0.0.1" in text
    assert "re-run the same command" in text
    started = {p.name for p in (out / "trials").iterdir()}
    assert started  # the trial directories stay for the resumed run to replace

    pg_server.start()  # nothing lost: the same command finishes the sweep
    assert main(["sweep", *args[:-4], "--workers", "1", "--storage", url]) == 0
    done = [t for t in sw.load_trials(url, "pgdown") if t.state == TrialState.COMPLETE]
    assert sorted(t.params["train.lr"] for t in done) == [0.05, 0.1]
