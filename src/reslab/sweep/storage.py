"""Optuna storages from a URL: SQLite (default), PostgreSQL/MySQL, or `journal:PATH`.

RDB storages get a heartbeat, so a trial whose worker was killed is failed after the grace
period and re-queued (same parameters) by the retry callback.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import optuna

from ..errors import ReslabError
from .spec import Heartbeat

SQLITE_TIMEOUT_S = 120


def default_url(sweep_dir: Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / 'study.db'}"


def make_storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
    """`heartbeat=None` (the progress monitor) opens the storage without one."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs = _engine_kwargs(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                 **_heartbeat_kwargs(heartbeat))
    except ImportError as err:
        raise ReslabError(f"--storage {_redact(url)}: missing database driver ({err}); "
                          "for PostgreSQL: pip install psycopg2-binary") from None
    except Exception as err:  # sqlalchemy/driver errors: unreachable server, bad URL, auth
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ReslabError(f"--storage {_redact(url)}: cannot open ({first})") from None
    if url.startswith("sqlite"):
        _serialise_sqlite(storage.engine)
    return storage


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Local workers wait for each other's writes instead of failing with
        # "database is locked".
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    # Long trials leave pooled connections idle for hours; servers and proxies drop those.
    return {"pool_pre_ping": True}


def _heartbeat_kwargs(heartbeat: Heartbeat | None) -> dict:
    if heartbeat is None:
        return {}
    storages = optuna.storages
    # Optuna 4.9 renamed the retry callback and its argument; support both spellings.
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) \
        or storages.RetryFailedTrialCallback
    params = inspect.signature(storages.RDBStorage.__init__).parameters
    arg = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params \
        else "failed_trial_callback"
    return {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace_period,
            arg: retry(max_retry=heartbeat.max_retry)}


def _serialise_sqlite(engine) -> None:
    """Make every SQLite transaction BEGIN IMMEDIATE.

    pysqlite only opens a transaction at the first write, so Optuna's "read the trial, then
    update it if still WAITING" check would read outside the write lock and two workers
    could both take the same queued trial. IMMEDIATE takes the write lock up front.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed must not be reused


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between beats, or None where the storage has no heartbeat (journal)."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if callable(get) else None


def _redact(url: str) -> str:
    """Hide a password in error messages: scheme://user:***@host."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url
