"""Sweeps started together on one new study database (issue 22 item 7), and a storage that
cannot be reached (issue 23 item 4): the schema-creation race is retried, an unreachable
server is one line and exit 2 within seconds."""
from __future__ import annotations

import multiprocessing as mp
import socket
import time

import pytest
import yaml

from reslab.errors import ReslabError
from reslab.sweep.spec import load_sweep
from reslab.sweep.storage import CONNECT_TIMEOUT_S, make_storage
from reslab.sweep.study import fill_queue, open_study

WORKERS = 4


def _open_together(url: str, sweep_path: str, barrier, results) -> None:
    """One sweep parent's start: open the storage, create or join the study, queue trials."""
    sweep = load_sweep(sweep_path)
    barrier.wait()  # every worker opens the new database at the same instant
    try:
        storage = make_storage(url, sweep.spec.heartbeat)
        fill_queue(open_study(sweep, storage, "race"), sweep)
        results.put("ok")
    except ReslabError as err:
        results.put(str(err))


def open_at_the_same_instant(url: str, sweep_path) -> list[str]:
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_open_together, args=(url, str(sweep_path), barrier, results))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [results.get(timeout=5) for _ in procs]


def grid_points(write_sweep):
    return write_sweep(sampler="grid", space={"train.lr": {"values": [0.05, 0.1]}})


def queued_points(url: str) -> list[float]:
    import optuna

    from reslab.sweep.study import point_of

    trials = optuna.load_study(study_name="race", storage=make_storage(url)).get_trials()
    return sorted(point_of(t)["train.lr"] for t in trials)


@pytest.mark.parametrize("attempt", range(3))
def test_four_workers_creating_one_sqlite_study_at_once_all_succeed(tmp_path, write_sweep,
                                                                    attempt):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert open_at_the_same_instant(url, grid_points(write_sweep)) == ["ok"] * WORKERS
    # Each point queued at least once; a point queued twice is trained once (duplicate_of).
    assert set(queued_points(url)) == {0.05, 0.1}


def test_four_workers_creating_one_postgres_study_at_once_all_succeed(tmp_path, write_sweep,
                                                                      postgres_url):
    import psycopg2

    base, _, _ = postgres_url.rpartition("/")
    host_port = base.rpartition("@")[2]
    conn = psycopg2.connect(host=host_port.split(":")[0], port=int(host_port.split(":")[1]),
                            user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE race_fresh")
    conn.close()
    url = f"{base}/race_fresh"
    assert open_at_the_same_instant(url, grid_points(write_sweep)) == ["ok"] * WORKERS
    assert set(queued_points(url)) == {0.05, 0.1}


def test_connect_timeout_is_at_most_10_s():
    assert CONNECT_TIMEOUT_S <= 10


@pytest.fixture
def silent_server():
    """A loopback port that accepts connections and never answers (a hung or firewalled
    server): only the connect timeout ends the wait."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.mark.parametrize("where", ["refused", "silent"])
def test_a_bad_storage_host_exits_2_within_15_s(tmp_path, write_sweep, cli, silent_server,
                                                where):
    pytest.importorskip("psycopg2")
    import reslab.sweep.run  # noqa: F401  (imports are not the storage's time)

    port = 1 if where == "refused" else silent_server
    url = f"postgresql+psycopg2://user@127.0.0.1:{port}/db"
    spec = grid_points(write_sweep)
    before = spec.read_bytes()
    start = time.monotonic()
    code, out, err = cli("sweep", spec, "--out", tmp_path / "out", "--storage", url)
    assert time.monotonic() - start < 15
    assert code == 2 and out == ""
    reason = "Connection refused" if where == "refused" else "timeout expired"
    assert err == (f"reslab sweep: error: --storage {url}: cannot open (connection to server at "
                   f"\"127.0.0.1\", port {port} failed: {reason})\n")
    assert spec.read_bytes() == before
    assert not (tmp_path / "out").exists()  # checked before the sweep directory is made


# A storage that cannot work is one line, exit 2, before --out is made (no .reslab marker, no
# study.txt left behind): (URL, the reason after "cannot open" or the whole message).
BAD_STORAGES = {
    "not a URL": ("nonsense", "cannot open (Could not parse SQLAlchemy URL from given URL "
                              "string)"),
    "unknown database": ("foo://host/db", "cannot open (Can't load plugin: "
                                          "sqlalchemy.dialects:foo)"),
    "in-memory SQLite": ("sqlite://", "an in-memory SQLite database is not shared with the "
                                      "sweep's worker processes; expected sqlite:///PATH"),
    "SQLite file is a folder": ("sqlite:///{dir}", "cannot open (unable to open database file)"),
    "journal file is a folder": ("journal:{dir}", "cannot open (is a directory: {dir})"),
    "journal without a file": ("journal:", "no file; expected journal:PATH"),
}


@pytest.mark.parametrize("case", BAD_STORAGES)
@pytest.mark.parametrize("command", ["sweep", "study"])
def test_a_bad_storage_is_one_line_and_writes_nothing(tmp_path, write_sweep, cli, case,
                                                      command):
    url, reason = (text.format(dir=tmp_path) for text in BAD_STORAGES[case])
    if command == "sweep":
        spec = grid_points(write_sweep)
    else:
        spec = tmp_path / "study.yaml"
        sweep = yaml.safe_load(grid_points(write_sweep).read_text())
        sweep["base"]["data"]["test_fraction"] = 0.2  # a study tests every variant
        spec.write_text(yaml.safe_dump({"name": "s", "base": sweep["base"], "axes": {
            "width": {"w4": {"model.width": 4}}}, "sweep": {
            "sampler": "grid", "space": sweep["space"]}, "confirm": {"repeats": 2}}))
    before = spec.read_bytes()
    code, out, err = cli(command, spec, "--out", tmp_path / "out", "--storage", url)
    assert (code, out) == (2, "")
    assert err == f"reslab {command}: error: --storage {url}: {reason}\n"
    assert not (tmp_path / "out").exists() and spec.read_bytes() == before
