"""Small shared helpers: durable atomic writes, JSON lines that survive a crash, CSV, natural
sort, cores. No torch here: the layers above import this cheaply."""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
import tempfile
import time
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import output

TMP_SUFFIX = ".tmp"


def natural_key(text: str) -> list:
    """Sort key that orders '2' before '10' (and 'img2' before 'img10')."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def natural_sorted(items: Iterable[str]) -> list[str]:
    return sorted(items, key=natural_key)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, rename, fsync the folder: readers never see a
    half-written file, and after a crash the file is either the old one or the new one."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as err:  # e.g. a read-only folder: name the file asked for, not the temp
        err.filename, err.filename2 = str(path), None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        _default_mode(tmp)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename in (None, tmp):  # name the file the user asked for, not our temp file
            err.filename, err.filename2 = str(path), None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: Path, older_than: float = 0.0) -> list[Path]:
    """Temp files a killed write left behind (`.NAME.XXXX.tmp`, last written over
    `older_than` seconds ago); returns what was removed."""
    now = time.time()
    stale = [p for p in Path(folder).glob(f".*{TMP_SUFFIX}")
             if p.is_file() and now - p.stat().st_mtime >= older_than]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _default_mode(path: str | os.PathLike) -> None:
    # mkstemp creates 0600 files; give the final file the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH
                    | stat.S_IWOTH) & ~umask)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one line and fsync it: a crash can tear at most this line (see read_jsonl)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, warn: bool = True) -> list[dict]:
    """JSON lines; a torn last line (a crash mid-append) is dropped with a warning. A bad line
    before the last is not a crash artefact: that raises ValueError naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
            if warn:
                output.warn(f"{path}: dropped a torn last line (an interrupted write)")
    return rows


def write_csv(path: str | os.PathLike, header: list[str], rows: Iterable[Iterable]) -> None:
    """Through the csv module, so names with commas, quotes or newlines stay one cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


class CallablePackage(types.ModuleType):
    """A package that can be called like the top-level function of the same name it replaces
    once imported (`reslab.evaluate(...)`, `reslab.sweep(...)`): it calls its module-level
    `__call_target__`."""

    def __call__(self, *args, **kwargs):
        return self.__call_target__(*args, **kwargs)


def os_error_line(err: OSError) -> str:
    """One line naming what failed and where: "no space left on device writing runs/x"."""
    where = " ".join(str(f) for f in (err.filename, err.filename2) if f)
    what = "no space left on device" if err.errno == errno.ENOSPC else \
        (err.strerror or str(err)).lower()
    return f"{what}{': ' + where if where else ''}"
