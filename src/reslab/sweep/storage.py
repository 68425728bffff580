"""Optuna storages from a URL: SQLite (default), PostgreSQL/MySQL, or `journal:PATH`.

RDB storages get a heartbeat, so a trial whose worker was killed is failed after the grace
period and re-queued (same parameters) by the retry callback.

Also here: `redact_url`, the one way a storage URL is printed (passwords and credential-like
query parameters hidden), and `storage_errors`, which turns the database going away mid-sweep
(server stopped, connection dropped, SQLite file unreadable) into one ReslabError line per
process instead of a traceback from every thread that touched it.
"""
from __future__ import annotations

import inspect
import random
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote_plus

import optuna
import sqlalchemy.engine.url as sa_url
import sqlalchemy.exc as sa_exc

from ..errors import ReslabError
from ..runs.rundir import SweepDir
from ..utils import os_error_line
from .spec import Heartbeat

SQLITE_TIMEOUT_S = 120
# Seconds to wait for a database server to accept a connection: an unreachable host (packets
# dropped rather than refused) must end a worker with an error, not hang it for minutes.
CONNECT_TIMEOUT_S = 10
# Attempts after a lost schema-creation race (see _open_rdb), and the database messages that
# mean one: SQLite, PostgreSQL (pg_type / relation) and MySQL wordings.
SCHEMA_RACE_RETRIES = 8
SCHEMA_RACE_PHRASES = ("already exists", "unique constraint", "duplicate key", "duplicate entry")
_JITTER = random.SystemRandom()  # forked workers share the random module's state
# A query parameter whose name contains one of these holds a credential (password, passwd,
# pass, pwd, sslpassword, secret, token, api_key, auth...): its value is never printed.
SECRET_PARAM_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "cred")


def default_url(sweep_dir: Path) -> str:
    """The sweep directory's own SQLite study."""
    return f"sqlite:///{SweepDir(sweep_dir).study_db.resolve()}"


def refuse_emptied_study_db(sweep_dir: SweepDir, url: str) -> None:
    """A zero-byte study.db beside trial directories is a lost database (a failed copy, a full
    disk), not a new sweep: SQLite would open it as empty, trial numbers would restart at 0
    and the finished trials' directories would be replaced as stale. Refused, nothing
    changed."""
    db = sweep_dir.study_db
    if url != default_url(sweep_dir.path) or not db.is_file() or db.stat().st_size > 0:
        return
    trials = [p for p in sweep_dir.trials.glob("*") if p.is_dir()]
    if trials:
        raise ReslabError(f"{db} is empty (0 bytes) but {sweep_dir.trials} holds "
                          f"{len(trials)} trial directories: the study database was lost; "
                          "restore it from a backup, or sweep into a new --out DIR (nothing "
                          "was changed)")


def make_storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
    """`heartbeat=None` (the progress monitor) opens the storage without one."""
    file = local_file(url)
    if in_memory_sqlite(url):
        raise ReslabError(f"--storage {redact_url(url)}: an in-memory SQLite database is not "
                          "shared with the sweep's worker processes; expected sqlite:///PATH")
    if url.startswith("journal:") and not url.removeprefix("journal:").strip():
        raise ReslabError(f"--storage {url}: no file; expected journal:PATH")
    try:
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(file)))
    except OSError as err:  # a folder where the file goes, a read-only or missing parent
        raise ReslabError(f"--storage {redact_url(url)}: cannot open ({os_error_line(err)})"
                          ) from None
    try:
        storage = _open_rdb(url, _engine_kwargs(url), heartbeat)
    except ImportError as err:
        raise ReslabError(f"--storage {redact_url(url)}: missing database driver "
                          f"({redact_text(str(err), url)}); for PostgreSQL: pip install "
                          "psycopg2-binary") from None
    except Exception as err:  # sqlalchemy/driver errors: unreachable server, bad URL, auth
        reason = redact_text(_first_line(getattr(err, "orig", None) or err), url)
        raise ReslabError(f"--storage {redact_url(url)}: cannot open ({reason})") from None
    if url.startswith("sqlite"):
        _serialise_sqlite(storage.engine)
    return storage


def local_file(url: str) -> Path | None:
    """The file a `sqlite:///PATH` or `journal:PATH` storage keeps its studies in; None for a
    database server (or an in-memory SQLite URL)."""
    for scheme in ("journal:", "sqlite:///"):
        if url.startswith(scheme):
            return Path(url.removeprefix(scheme))
    return None


def in_memory_sqlite(url: str) -> bool:
    try:
        parsed = sa_url.make_url(url)
    except Exception:  # noqa: BLE001 -- not a URL: opening it says so
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def open_before(url: str, folder: Path, heartbeat: Heartbeat | None = None
                ) -> optuna.storages.BaseStorage | None:
    """A --storage opened before `folder` (the sweep's or study's --out) is made: a bad one
    (malformed, unreachable, no driver, an unusable file) is then one line with nothing
    written. A file storage inside `folder` is opened after the folder is claimed, as opening
    it writes there (None: not opened here)."""
    file = local_file(url)
    if file is not None and Path(folder).resolve() in (file.resolve(), *file.resolve().parents):
        return None
    return make_storage(url, heartbeat)


def close_storage(storage: optuna.storages.BaseStorage | None) -> None:
    """Close a storage opened only to check it (its pooled database connections)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def _open_rdb(url: str, kwargs: dict, heartbeat: Heartbeat | None
              ) -> optuna.storages.RDBStorage:
    """RDBStorage, retrying the schema-creation race: workers that open a new database at
    the same instant (several sweeps started together, the documented way to share one)
    each create the tables and insert the schema version; all but one then fail with
    "table ... already exists" / a UNIQUE violation. The next attempt finds the schema made."""
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                  **_heartbeat_kwargs(heartbeat))
        except Exception as err:
            if attempt == SCHEMA_RACE_RETRIES or not is_schema_race(err):
                raise
            time.sleep(_JITTER.uniform(0.05, 0.3) * (attempt + 1))
    raise AssertionError("unreachable")


def is_schema_race(err: BaseException) -> bool:
    """Another process created the same table, type or schema-version row first."""
    for e in _exception_chain(err):
        text = str(getattr(e, "orig", None) or e).lower()
        if isinstance(e, sa_exc.IntegrityError) or any(
                phrase in text for phrase in SCHEMA_RACE_PHRASES):
            return True
    return False


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Local workers wait for each other's writes instead of failing with
        # "database is locked".
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    # Long trials leave pooled connections idle for hours; servers and proxies drop those.
    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")) and "connect_timeout" not in url:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


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


def redact_url(url: str) -> str:
    """The URL as reslab prints it: `scheme://user:***@host/db?password=***&sslmode=require`.
    Use it wherever a storage URL goes into a message."""
    base, sep, query = url.partition("?")
    return _redact_userinfo(base) + (sep + _redact_query(query) if sep else "")


def _redact_userinfo(base: str) -> str:
    scheme, sep, rest = base.partition("://")
    if not sep or "@" not in rest:
        return base
    # Up to the last '@': an unencoded '@' in a password must not leak the rest of it.
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}:***@{host}" if colon else base


def _redact_query(query: str) -> str:
    def hide(m: re.Match) -> str:
        name = unquote_plus(m.group(2)).lower()
        secret = any(word in name for word in SECRET_PARAM_WORDS)
        return f"{m.group(1)}{m.group(2)}={'***' if secret else m.group(3)}"

    return re.sub(r"(^|[&;])([^=&;]*)=([^&;]*)", hide, query)


def _secrets(url: str) -> list[str]:
    """The credential values in `url`, as written and percent-decoded."""
    base, _, query = url.partition("?")
    found = []
    _, sep, rest = base.partition("://")
    if sep and "@" in rest:
        creds = rest.rpartition("@")[0]
        if ":" in creds:
            found.append(creds.partition(":")[2])
    for name, value in re.findall(r"(?:^|[&;])([^=&;]*)=([^&;]*)", query):
        if any(word in unquote_plus(name).lower() for word in SECRET_PARAM_WORDS):
            found.append(value)
    return [v for s in found for v in {s, unquote_plus(s)} if len(v) >= 3]


def redact_text(text: str, url: str) -> str:
    """A library's message with the URL and each of its credentials hidden (drivers may echo
    connection parameters)."""
    text = text.replace(url, redact_url(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------- the database going away

class StorageLostError(ReslabError):
    """The storage failed mid-sweep (server gone, connection lost, file unreadable)."""


_DBAPI_MODULES = ("sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb")


def _exception_chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is_connection_failure(err: BaseException) -> bool:
    if isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError,
                        sa_exc.DisconnectionError)):
        return True
    if type(err) is sa_exc.DatabaseError:  # e.g. SQLite "file is not a database"
        return True
    kind = type(err)  # a driver's own error that SQLAlchemy did not wrap
    return kind.__module__.split(".")[0] in _DBAPI_MODULES and kind.__name__ in (
        "OperationalError", "InterfaceError", "DatabaseError")


def storage_failure_reason(err: BaseException) -> str | None:
    """The database's own first line when `err` is (or was caused by) the storage failing,
    Optuna's StorageInternalError wrapper included; None for any other error (integrity
    errors, bugs) so that those stay visible as they are."""
    for e in _exception_chain(err):
        if _is_connection_failure(e):
            return _first_line(getattr(e, "orig", None) or e)
    return None


def is_storage_failure(err: BaseException) -> bool:
    return storage_failure_reason(err) is not None


def storage_lost(url: str, err: BaseException) -> StorageLostError:
    reason = redact_text(storage_failure_reason(err) or _first_line(err), url)
    return StorageLostError(f"--storage {redact_url(url)}: the database went away ({reason}); "
                            "re-run the same command to resume once it is back")


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Inside the block, the storage failing raises one StorageLostError (exit 2, one line
    naming the redacted URL); everything else passes through unchanged. Also a decorator:
    `@storage_errors(url)`."""
    try:
        yield
    except ReslabError:
        raise
    except Exception as err:
        if not is_storage_failure(err):
            raise
        raise storage_lost(url, err) from None
